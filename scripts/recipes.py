"""The seeds' recipes from the command line, measured on one data set (issue: recipes).

Every step is a mamfpga command, run as a user would (``python -m mamfpga ...``), into
build/recipes/DATASET/; the summary at the end is what the README quotes.

1. MAC -> MAM from a trained model: ``train --mode mac``, ``train --mode mam`` (from scratch) and
   ``train --init mac.pt`` (MAC -> MAM, fewer epochs); the epoch at which each MAM run first
   reaches the from-scratch run's final validation accuracy, from their per-epoch logs.
2. Pruning before convergence: ``sweep --early``.
3. FLOPs: ``eval --json`` of the MAM network, dense and pruned.
4. Structured pruning: ``sweep --methods gmp,ll2n,lapoz,ll2n+gmp --kept 0.5,0.25,0.1`` on the MAC
   and MAM networks.
5. Prune to an accuracy budget: ``prune --max-drop 0.01 --finetune``.
6. Per-epoch logs: ``train --schedule parabolic`` beside the linear run, ``plot`` of both.

Usage: .venv/bin/python scripts/recipes.py [digits|mnist5k]   (digits: about 15 minutes on 2
cores; mnist5k, the demo's CNN: about an hour)
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

CNN = "conv8k3,pool2,conv16k3,pool2"
#: per data set: the network, and the epochs (beta 1 -> 0 over the first vc) of a from-scratch run
CONFIG = {
    "digits": {"net": [], "epochs": 60, "vc": 20, "init_epochs": 30, "init_vc": 10, "finetune": 5},
    "mnist5k": {"net": ["--arch", CNN], "epochs": 40, "vc": 12, "init_epochs": 20, "init_vc": 6, "finetune": 3},
}


def mamfpga(*args: str) -> str:
    """One mamfpga command; its output (it must succeed)."""
    cmd = [sys.executable, "-m", "mamfpga", *args]
    print("$ mamfpga " + " ".join(args), flush=True)
    t = time.perf_counter()
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"failed ({run.returncode}): {' '.join(args)}\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}")
    print(f"  ({time.perf_counter() - t:.0f} s)", flush=True)
    return run.stdout


def epochs_log(path: Path) -> list[dict]:
    return list(csv.DictReader(path.open()))


def first_reaching(rows: list[dict], target: float) -> int | None:
    """The first epoch at which the network is all MAM (beta 0) and its validation accuracy is
    at least ``target``."""
    for r in rows:
        if float(r["beta"]) == 0 and float(r["val_acc"]) >= target:
            return int(r["epoch"])
    return None


def main():
    name = sys.argv[1] if len(sys.argv) > 1 else "digits"
    cfg = CONFIG[name]
    out = Path("build/recipes") / name
    out.mkdir(parents=True, exist_ok=True)
    common = ["--dataset", name, *cfg["net"], "-q", "--force"]
    sched = ["--epochs", str(cfg["epochs"]), "--vc-epochs", str(cfg["vc"])]
    summary = {}

    # 1. MAC -> MAM
    mamfpga("train", "--mode", "mac", *common, "--epochs", str(cfg["epochs"]), "-o", str(out / "mac.pt"))
    mamfpga("train", "--mode", "mam", *common, *sched, "-o", str(out / "mam.pt"))
    mamfpga("train", "--init", str(out / "mac.pt"), "--dataset", name, "-q", "--force", "--epochs",
            str(cfg["init_epochs"]), "--vc-epochs", str(cfg["init_vc"]), "-o", str(out / "mam_from_mac.pt"))
    acc = {k: json.loads(mamfpga("eval", str(out / f"{k}.pt"), "--json"))["accuracy"]
           for k in ("mac", "mam", "mam_from_mac")}
    scratch, init = epochs_log(out / "mam.epochs.csv"), epochs_log(out / "mam_from_mac.epochs.csv")
    target = float(scratch[-1]["val_acc"])
    summary["mac_to_mam"] = {"test_accuracy": acc, "scratch_final_val": target,
                             "scratch_epochs": len(scratch), "init_epochs": len(init),
                             # as MAM (beta 0), within a point of the from-scratch run's final validation accuracy
                             "scratch_within_1pt_at": first_reaching(scratch, target - 0.01),
                             "init_within_1pt_at": first_reaching(init, target - 0.01),
                             "init_best_val": max(float(r["val_acc"]) for r in init)}

    # 6. the per-epoch logs of both schedules, drawn
    mamfpga("train", "--mode", "mam", *common, *sched, "--schedule", "parabolic", "-o", str(out / "mam_parabolic.pt"))
    mamfpga("plot", str(out / "mam.epochs.csv"), str(out / "mam_parabolic.epochs.csv"), "--title",
            f"{name}: MAM, beta linear and parabolic", "-o", str(out / "schedules.png"), "--force")
    parabolic = epochs_log(out / "mam_parabolic.epochs.csv")
    summary["schedules"] = {
        s: {"val_at_beta0": float(rows[cfg["vc"] - 1]["val_acc"]),
            "val_before": float(rows[cfg["vc"] - 2]["val_acc"]),
            "val_min_after": min(float(r["val_acc"]) for r in rows[cfg["vc"] - 1:cfg["vc"] + 3]),
            "val_final": float(rows[-1]["val_acc"])}
        for s, rows in (("linear", scratch), ("parabolic", parabolic))}

    # 5. prune to an accuracy budget; 3. FLOPs
    text = mamfpga("prune", str(out / "mam.pt"), "--method", "gmp", "--max-drop", "0.01", "--finetune",
                   str(cfg["finetune"]), "-q", "--force", "-o", str(out / "budget.pt"))
    summary["max_drop"] = [line.strip() for line in text.splitlines() if "sparsity" in line]
    evals = {k: json.loads(mamfpga("eval", str(out / f"{k}.pt"), "--json")) for k in ("mam", "budget")}
    summary["flops"] = {k: {f: e[f] for f in ("flops", "flops_dense", "flops_saved", "accuracy")}
                        for k, e in evals.items()}

    # 4. structured pruning against unstructured, MAC and MAM
    mamfpga("sweep", "--dataset", name, "--mam-model", str(out / "mam.pt"), "--mac-model", str(out / "mac.pt"),
            "--methods", "gmp,ll2n,lapoz,ll2n+gmp", "--kept", "0.5,0.25,0.1", "--finetune", str(cfg["finetune"]),
            "-q", "--out", str(out / "structured"))
    summary["structured"] = list(csv.DictReader((out / "structured" / "sweep.csv").open()))

    # 2. pruning before convergence
    mamfpga("sweep", "--early", "--dataset", name, *cfg["net"], *sched, "--kept", "0.01", "--finetune",
            str(cfg["finetune"]), "-q", "--out", str(out / "early"))
    summary["early"] = list(csv.DictReader((out / "early" / "early.csv").open()))

    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k not in ("structured", "early")}, indent=1))
    print(f"wrote {out / 'summary.json'}")


if __name__ == "__main__":
    main()
