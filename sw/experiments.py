"""The prunability experiment: accuracy against kept fraction, MAC vs MAM, every method.

``sweep`` trains (or takes) a MAC and a MAM network on a data set, prunes
copies of them with each method at each kept fraction, one-shot and
fine-tuned, and also reverts the pruned MAM networks to MAC and fine-tunes
them (MAM -> MAC). Rows go to a CSV; a PNG plots accuracy against kept
fraction on a log axis.
"""

from __future__ import annotations

import copy
import csv
import io
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from torch import nn

from mamfpga.outputs import atomic_write_text, pyplot, save_figure
from mamfpga.sw import data as data_mod
from mamfpga.sw import prune as prune_mod
from mamfpga.sw.mam import to_mac
from mamfpga.sw.train import TrainConfig, accuracy, build_mlp, build_model, finetune, fit

__all__ = ["SweepRow", "sweep", "write_csv", "plot", "DEFAULT_KEPT", "pruning_batches", "EarlyRow", "early_sweep",
           "plot_early", "EARLY_DELAYS", "TRAIN_FLOPS_PER_FORWARD"]

DEFAULT_KEPT = (0.1, 0.03, 0.01, 0.003, 0.001)


@dataclass
class SweepRow:
    network: str        # "mac" | "mam"
    method: str
    kept: float         # fraction of the targeted weights kept (of the hidden units, for a structured method)
    stage: str          # "one-shot" | "fine-tuned" | "mam->mac"
    accuracy: float
    dense_accuracy: float
    weights_kept: float = 1.0   # what the pruning left: the fraction of the targeted weights nonzero
    units_kept: float = 1.0     # and of the hidden units with a weight left


def pruning_batches(ds: data_mod.Dataset, batch: int = 256):
    """The pruning set (scores that need data): the training set, in fixed batches."""
    return list(data_mod.loader(ds.x_train, ds.y_train, batch, shuffle=False))


#: the share of the hidden units the structured half of a combined method ("ll2n+gmp") removes
COMBINED_UNITS_REMOVED = 0.5


def method_parts(method: str) -> list[str]:
    """A sweep's method: one pruning method, or "STRUCTURED+UNSTRUCTURED" (both, in that order)."""
    return method.split("+")


def needs_mam(method: str) -> bool:
    """Whether a (combined) method scores by the probability of selection, which only MAM layers have."""
    return any(prune_mod.METHODS.get(m, ("",))[0] in ("selection", "magnitude*selection") for m in method_parts(method))


def apply_method(model: nn.Module, method: str, kept: float, data) -> None:
    """Prune ``model`` by a sweep's method to ``kept``: the fraction of the targeted weights kept
    (unstructured), of the hidden units kept (structured), or, combined ("ll2n+gmp"), the
    structured method removing :data:`COMBINED_UNITS_REMOVED` of the units and the unstructured
    one then pruning the weights to ``kept``."""
    parts = method_parts(method)
    if len(parts) == 2:
        prune_mod.prune_model(model, parts[0], COMBINED_UNITS_REMOVED, data=data)
        prune_mod.prune_model(model, parts[1], 1.0 - kept, data=data)
    else:
        prune_mod.prune_model(model, method, 1.0 - kept, data=data)


def sweep(ds: data_mod.Dataset, *, models: dict[str, nn.Module] | None = None,
          methods=tuple(prune_mod.METHODS), kept=DEFAULT_KEPT, finetune_epochs: int = 10,
          train_cfg: TrainConfig | None = None, hidden=None, arch: str | None = None,
          log: Callable[[str], None] = print, progress: bool = True) -> list[SweepRow]:
    from tqdm.auto import tqdm

    models = dict(models or {})
    cfg = train_cfg or TrainConfig()
    for mode in ("mac", "mam"):
        if mode not in models:
            log(f"training the {mode.upper()} network ...")
            if arch is not None:
                m = build_model(arch, ds.sample_shape, ds.classes, mode=mode, seed=cfg.seed)
            else:
                kwargs = {} if hidden is None else {"hidden": hidden}
                m = build_mlp(ds.features, ds.classes, mode=mode, seed=cfg.seed, **kwargs)
            fit(m, ds, cfg, progress=progress)
            models[mode] = m
    pset = pruning_batches(ds)
    rows: list[SweepRow] = []
    jobs = [(net, method, k) for net in ("mac", "mam") for method in methods for k in kept
            if not (net == "mac" and needs_mam(method))]
    dense = {net: accuracy(models[net], ds.x_test, ds.y_test) for net in models}
    for net, method, k in tqdm(jobs, desc="sweep", disable=not progress):
        model = copy.deepcopy(models[net])
        apply_method(model, method, k, pset)
        units = prune_mod.units_removed(model)
        left = {"weights_kept": 1.0 - prune_mod.sparsity(model),
                "units_kept": 1.0 - sum(r for r, _ in units.values()) / sum(u for _, u in units.values())}
        rows.append(SweepRow(net, method, k, "one-shot", accuracy(model, ds.x_test, ds.y_test), dense[net], **left))
        if net == "mam":
            reverted = to_mac(copy.deepcopy(model))
            acc = finetune(reverted, ds, epochs=finetune_epochs, progress=False)
            rows.append(SweepRow(net, method, k, "mam->mac", acc, dense[net], **left))
        acc = finetune(model, ds, epochs=finetune_epochs, progress=False)
        rows.append(SweepRow(net, method, k, "fine-tuned", acc, dense[net], **left))
    return rows


def write_csv(rows: list, path) -> Path:
    """Rows of a sweep (``SweepRow`` or ``EarlyRow``: any dataclass) as CSV, written atomically."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(asdict(rows[0]).keys()) if rows else ["network"])
    w.writeheader()
    for r in rows:
        w.writerow(asdict(r))
    return atomic_write_text(path, buf.getvalue())


def plot(rows: list[SweepRow], path, title: str = "digits") -> Path | None:
    """Accuracy against the fraction kept, per stage (None: no matplotlib)."""
    plt = pyplot()
    if plt is None:
        return None
    stages = ["one-shot", "fine-tuned", "mam->mac"]
    methods = list(dict.fromkeys(r.method for r in rows))
    colour = {m: plt.cm.tab10(k % 10) for k, m in enumerate(methods)}
    fig, axes = plt.subplots(1, len(stages), figsize=(15, 4.5), sharey=True)
    for ax, stage in zip(axes, stages):
        for net, style in (("mam", "-"), ("mac", "--")):
            for method in methods:
                pts = sorted((r.kept, r.accuracy) for r in rows
                             if r.network == net and r.method == method and r.stage == stage)
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], style, color=colour[method],
                            marker="o" if net == "mam" else "x", ms=3, label=f"{net.upper()} {method}")
        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.set_xlabel("fraction of targeted weights kept")
        ax.set_title(f"{title}: {stage}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("test accuracy")
    axes[0].legend(fontsize=6, ncol=2, loc="lower left", title="solid MAM, dashed MAC", title_fontsize=6)
    return save_figure(fig, path)


def plot_epochs(logs: dict[str, list[dict]], path, title: str = "") -> Path | None:
    """Per-epoch logs (``train``'s and ``prune --finetune``'s CSV rows, by label): validation
    accuracy (solid; training-set accuracy dashed) above, beta and sparsity below, against the
    epoch counted over the whole run (fine-tuning continues the count). None: no matplotlib."""
    plt = pyplot()
    if plt is None:
        return None
    fig, (top, low) = plt.subplots(2, 1, figsize=(8, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    for k, (label, rows) in enumerate(logs.items()):
        colour = plt.cm.tab10(k % 10)
        x = list(range(1, len(rows) + 1))
        for key, style in (("val_acc", "-"), ("train_acc", "--")):
            pts = [(e, r[key]) for e, r in zip(x, rows) if r.get(key) is not None]
            if pts:
                top.plot([p[0] for p in pts], [p[1] for p in pts], style, color=colour, lw=1.2,
                         label=f"{label} ({'validation' if key == 'val_acc' else 'training set'})")
        low.plot(x, [r["beta"] for r in rows], "-", color=colour, lw=1.2, label=f"{label}: beta")
        low.plot(x, [r["sparsity"] for r in rows], ":", color=colour, lw=1.2, label=f"{label}: sparsity")
        tuned = [e for e, r in zip(x, rows) if r.get("phase") == "finetune"]
        if tuned:
            top.axvline(tuned[0] - 0.5, color=colour, lw=0.6, alpha=0.5)
    top.set_ylabel("accuracy")
    top.set_title(title or "accuracy, beta and sparsity by epoch")
    top.grid(True, alpha=0.3)
    top.legend(fontsize=7, loc="lower right")
    low.set_ylabel("beta (solid), sparsity (dotted)")
    low.set_xlabel("epoch")
    low.set_ylim(-0.05, 1.05)
    low.grid(True, alpha=0.3)
    low.legend(fontsize=7, loc="center right")
    return save_figure(fig, path)


#: epochs after beta reaches 0 at which ``sweep --early`` prunes (the seeds' tables 7.2 and 7.3)
EARLY_DELAYS = (1, 3, 5, 10, 15)
#: training FLOPs of a sample: its forward pass and a backward pass of about twice its cost
TRAIN_FLOPS_PER_FORWARD = 3


@dataclass
class EarlyRow:
    schedule: str            # "linear" | "parabolic"
    pruned_after: int        # epoch at which it was pruned
    after_beta0: int | None  # epochs after beta reached 0 (None: trained to convergence first)
    mac_back: bool           # MAM -> MAC after pruning
    accuracy: float          # test accuracy after fine-tuning
    train_flops: int         # training FLOPs spent: dense epochs, then the fine-tuning's sparse ones
    train_flops_converged: int   # the same when pruned only after training to convergence
    saved: float             # 1 - train_flops / train_flops_converged


def _epoch_flops(model: nn.Module, ds: data_mod.Dataset, blending: bool = False) -> int:
    """Training FLOPs of one epoch of ``model`` as it is now (its kept weights, its layers' kinds);
    ``blending``: its MAM layers computed MAC and MAM both (beta > 0) through the epoch."""
    from mamfpga.sw.flops import FLOPS_PER_WEIGHT, flops

    per = sum((FLOPS_PER_WEIGHT["blend"] if blending and l["kind"] != "mac" else FLOPS_PER_WEIGHT[l["kind"]])
              * l["nnz"] * l["positions"] for l in flops(model, (ds.features,))["layers"])
    return TRAIN_FLOPS_PER_FORWARD * len(ds.y_train) * per


def early_sweep(ds: data_mod.Dataset, *, hidden=None, arch: str | None = None, train_cfg: TrainConfig | None = None,
                kept: float = 0.01, method: str = "gmp", finetune_epochs: int = 10,
                delays=EARLY_DELAYS, schedules=("linear", "parabolic"), log: Callable[[str], None] = print,
                progress: bool = True) -> list[EarlyRow]:
    """Pruning before convergence (the seeds' tables 7.2 and 7.3): for each beta ``schedule``, one
    MAM training run of cfg.epochs, copied ``delays`` epochs after beta reaches 0 (epoch
    cfg.vc_epochs) and at the end; each copy pruned by ``method`` to ``kept``, kept MAM or put
    back to MAC, fine-tuned ``finetune_epochs``. Training FLOPs: every dense epoch trained up
    to the pruning (blending MAC and MAM while beta > 0) and the sparse fine-tuning, against
    the same with pruning only at convergence."""
    cfg = train_cfg or TrainConfig()
    usable = [d for d in delays if cfg.vc_epochs + d < cfg.epochs]
    if not usable:
        raise ValueError(f"no delay of {list(delays)} leaves beta = 0 before epoch {cfg.epochs} "
                         f"(beta reaches 0 at epoch {cfg.vc_epochs})")
    pset = pruning_batches(ds)
    rows: list[EarlyRow] = []
    for schedule in schedules:
        scfg = copy.deepcopy(cfg)
        scfg.schedule = schedule
        if arch is not None:
            model = build_model(arch, ds.sample_shape, ds.classes, mode="mam", seed=scfg.seed)
        else:
            model = build_mlp(ds.features, ds.classes, mode="mam", seed=scfg.seed,
                              **({} if hidden is None else {"hidden": hidden}))
        snapshots: dict[int, nn.Module] = {}
        spent = [0]                               # training FLOPs up to each epoch
        at = {cfg.vc_epochs + d: d for d in usable}

        def on_epoch(epoch, m, at=at, snapshots=snapshots, spent=spent, vc=scfg.vc_epochs):
            spent.append(spent[-1] + _epoch_flops(m, ds, blending=epoch <= vc))
            if epoch in at or epoch == scfg.epochs:
                snapshots[epoch] = copy.deepcopy(m)
        log(f"{schedule}: training the MAM network {scfg.epochs} epochs (beta 1 -> 0 over {scfg.vc_epochs}), "
            f"copies at epochs {', '.join(str(e) for e in sorted(at))} and {scfg.epochs}")
        fit(model, ds, scfg, progress=progress, on_epoch=on_epoch)
        results: dict = {}
        for epoch in sorted(snapshots):
            for mac_back in (False, True):
                m = copy.deepcopy(snapshots[epoch])
                prune_mod.prune_model(m, method, 1.0 - kept, data=pset)
                if mac_back:
                    to_mac(m)
                tune = finetune_epochs * _epoch_flops(m, ds)
                acc = finetune(m, ds, epochs=finetune_epochs, progress=False)
                results[(epoch, mac_back)] = (acc, spent[epoch] + tune)
                log(f"  pruned after epoch {epoch}{' (converged)' if epoch == scfg.epochs else ''}, "
                    f"{'MAM -> MAC' if mac_back else 'MAM'}: accuracy {acc:.4f}")
        for (epoch, mac_back), (acc, fl) in results.items():
            conv = results[(scfg.epochs, mac_back)][1]
            rows.append(EarlyRow(schedule, epoch, None if epoch == scfg.epochs else at[epoch], mac_back, acc,
                                 int(fl), int(conv), 1.0 - fl / conv))
    return rows


def plot_early(rows: list[EarlyRow], path, title: str = "digits") -> Path | None:
    """Accuracy against the epochs after beta reached 0 at which the network was pruned, per
    schedule, MAM and MAM -> MAC; the converged-then-pruned accuracy as a dotted line."""
    plt = pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.8))
    styles = {("linear", False): ("C0", "-"), ("linear", True): ("C0", "--"),
              ("parabolic", False): ("C1", "-"), ("parabolic", True): ("C1", "--")}
    for (schedule, mac_back), (colour, style) in styles.items():
        pts = sorted((r.after_beta0, r.accuracy, r.saved) for r in rows
                     if r.schedule == schedule and r.mac_back == mac_back and r.after_beta0 is not None)
        if not pts:
            continue
        label = f"{schedule}, {'MAM -> MAC' if mac_back else 'MAM'}"
        ax.plot([p[0] for p in pts], [p[1] for p in pts], style, color=colour, marker="o", ms=4, label=label)
        for d, acc, saved in pts:
            ax.annotate(f"{saved:.0%}", (d, acc), textcoords="offset points", xytext=(3, 4), fontsize=6,
                        color=colour)
        conv = [r.accuracy for r in rows if r.schedule == schedule and r.mac_back == mac_back
                and r.after_beta0 is None]
        if conv:
            ax.axhline(conv[0], color=colour, ls=":", lw=1)
    ax.set_xlabel("epochs after beta reached 0 when pruned")
    ax.set_ylabel("test accuracy after fine-tuning")
    ax.set_title(f"{title}: pruning before convergence (dotted: pruned at convergence; "
                 "labels: training FLOPs saved)", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, path)
