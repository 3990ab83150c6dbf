"""train / prune / eval / sweep through the CLI, on small networks."""

import csv
import json

import pytest

from mamfpga import cli

SMALL = ["--hidden", "64,64", "--epochs", "15", "--vc-epochs", "4", "-q"]


@pytest.fixture(scope="module")
def mam_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "mam.pt"
    assert cli.main(["train", "--mode", "mam", *SMALL, "-o", str(path)]) == 0
    return path


def test_train_eval_json(mam_model, capsys):
    assert cli.main(["eval", str(mam_model), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"accuracy", "sparsity", "layers", "flops", "flops_dense", "flops_saved"}
    assert out["accuracy"] > 0.8 and out["sparsity"] == 0.0
    assert [l["mode"] for l in out["layers"]] == ["mam", "mam", "mac"]
    # dense 64-64-64-10: 3 FLOPs a MAM weight, 2 a MAC weight
    assert out["flops"] == out["flops_dense"] == 3 * (64 * 64 + 64 * 64) + 2 * 64 * 10
    assert out["flops_saved"] == 0.0


def test_prune_to_mac_finetune_simplify(mam_model, tmp_path, capsys):
    out = tmp_path / "p.pt"
    assert cli.main(["prune", str(mam_model), "--method", "lmp", "--sparsity", "0.9", "--to-mac",
                     "--finetune", "2", "--simplify", "-q", "-o", str(out)]) == 0
    capsys.readouterr()
    assert cli.main(["eval", str(out), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert all(l["mode"] == "mac" for l in res["layers"])
    assert res["accuracy"] > 0.5


@pytest.mark.parametrize("method", ["gpsp", "lgp", "lmp-lpsp"])
def test_prune_keeps_mam_and_reports_sparsity(mam_model, tmp_path, capsys, method):
    out = tmp_path / f"{method}.pt"
    assert cli.main(["prune", str(mam_model), "--method", method, "--sparsity", "0.95", "-q",
                     "-o", str(out)]) == 0
    capsys.readouterr()
    cli.main(["eval", str(out), "--json"])
    res = json.loads(capsys.readouterr().out)
    assert res["sparsity"] == pytest.approx(0.95, abs=0.001)
    assert [l["mode"] for l in res["layers"]] == ["mam", "mam", "mac"]
    # a pruned weight costs nothing: the FLOPs follow the nonzeros, layer by layer
    assert res["flops"] == sum(l["flops"] for l in res["layers"]) < res["flops_dense"]
    assert all(l["flops"] == (3 if l["mode"] == "mam" else 2) * l["nnz"] for l in res["layers"])
    assert res["flops_saved"] == pytest.approx(1 - res["flops"] / res["flops_dense"])


def test_iterative_and_before_convergence(tmp_path):
    a = tmp_path / "a.pt"
    assert cli.main(["train", "--mode", "mam", *SMALL, "--prune-at", "4", "--method", "gmp",
                     "--sparsity", "0.9", "-o", str(a)]) == 0
    b = tmp_path / "b.pt"
    assert cli.main(["prune", str(a), "--method", "gmp", "--sparsity", "0.97", "--rounds", "2",
                     "--finetune", "2", "--patience", "1", "-q", "-o", str(b)]) == 0


def test_errors_are_one_line_with_exit_2(mam_model, tmp_path, capsys):
    assert cli.main(["prune", str(mam_model), "--method", "obd", "--sparsity", "0.5", "-o",
                     str(tmp_path / "x.pt")]) == 2
    assert "unknown pruning method 'obd'" in capsys.readouterr().err
    assert cli.main(["prune", str(mam_model), "--method", "gmp", "--sparsity", "0.5", "-o",
                     str(mam_model)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    assert cli.main(["eval", str(junk)]) == 2
    assert "not a mamfpga model file" in capsys.readouterr().err
    assert cli.main(["train", "--dataset", "mnist", "-o", str(tmp_path / "m.pt")]) == 2
    assert "unknown dataset 'mnist'" in capsys.readouterr().err
    assert cli.main(["prune", str(mam_model), "--method", "gmp", "--sparsity", "0.5", "--layers", "7",
                     "-o", str(tmp_path / "y.pt")]) == 2
    assert "no Linear or Conv layer named '7'" in capsys.readouterr().err


def test_sweep_writes_csv_and_plot(mam_model, tmp_path, capsys):
    mac = tmp_path / "mac.pt"
    assert cli.main(["train", "--mode", "mac", *SMALL, "-o", str(mac)]) == 0
    out = tmp_path / "sweep"
    assert cli.main(["sweep", "--mam-model", str(mam_model), "--mac-model", str(mac), "--methods",
                     "gmp,lpsp,ll2n+gmp", "--kept", "0.1,0.01", "--finetune", "1", "-q", "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    # MAM: 3 methods x 2 kept x 3 stages; MAC: gmp and ll2n+gmp (no selection scores) x 2 kept x 2 stages
    assert len(rows) == 18 + 8
    both = [r for r in rows if r["method"] == "ll2n+gmp"]
    assert all(float(r["units_kept"]) <= 0.5 + 1e-6 for r in both)          # half the neurons gone, or more
    assert all(float(r["weights_kept"]) <= float(r["kept"]) + 1e-3 for r in both)
    assert {r["stage"] for r in rows} == {"one-shot", "fine-tuned", "mam->mac"}
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"


def test_train_writes_its_per_epoch_log_and_plot_draws_it(tmp_path, capsys):
    """train keeps a tenth of the training set apart: the log has the loss, the training-set and
    validation accuracy, beta and the sparsity of every epoch; plot draws logs; a log in the way
    is not overwritten unasked."""
    model = tmp_path / "m.pt"
    assert cli.main(["train", "--mode", "mam", *SMALL, "--schedule", "parabolic", "-o", str(model)]) == 0
    log = tmp_path / "m.epochs.csv"
    assert f"per-epoch log {log}" in capsys.readouterr().out
    rows = list(csv.DictReader(log.open()))
    assert [int(r["epoch"]) for r in rows] == list(range(1, 16)) and {r["phase"] for r in rows} == {"train"}
    assert all(0 <= float(r["val_acc"]) <= 1 and 0 <= float(r["train_acc"]) <= 1 for r in rows)
    betas = [float(r["beta"]) for r in rows]
    assert betas[0] < 1 and betas[3:] == [0.0] * 12 and betas == sorted(betas, reverse=True)
    assert float(rows[-1]["val_acc"]) > 0.8 and all(float(r["sparsity"]) == 0 for r in rows)
    png = tmp_path / "m.png"
    assert cli.main(["plot", str(log), "-o", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    # refused, one line, nothing written: a log that would be overwritten, a file that is not a log
    model.unlink()
    assert cli.main(["train", "--mode", "mam", *SMALL, "-o", str(model)]) == 2
    assert "m.epochs.csv exists" in capsys.readouterr().err and not model.exists()
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    assert cli.main(["plot", str(bad), "-o", str(tmp_path / "b.png")]) == 2
    err = capsys.readouterr().err
    assert "not a per-epoch log" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "b.png").exists()


def test_pruning_at_initialisation(tmp_path, capsys):
    """--prune-at 0 prunes the freshly initialised network: every epoch of the log is sparse."""
    model = tmp_path / "p0.pt"
    assert cli.main(["train", "--mode", "mam", *SMALL, "--prune-at", "0", "--method", "gmp", "--sparsity", "0.9",
                     "-o", str(model)]) == 0
    rows = list(csv.DictReader((tmp_path / "p0.epochs.csv").open()))
    assert all(float(r["sparsity"]) == pytest.approx(0.9, abs=0.001) for r in rows)


def test_prune_to_an_accuracy_budget(mam_model, tmp_path, capsys):
    """--max-drop: the sparsities tried, each within the budget of the unpruned model on the held-out
    validation split or not, the highest within it chosen; never the test set."""
    out = tmp_path / "b.pt"
    assert cli.main(["prune", str(mam_model), "--method", "gmp", "--max-drop", "0.02", "--finetune", "1", "-q",
                     "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "validation accuracy stays >=" in text and "chose sparsity" in text
    from mamfpga.sw.modelio import load_model

    _, meta = load_model(out)
    search = meta["pruning"]["search"]
    chosen = meta["pruning"]["sparsity"]
    assert chosen == max(s["sparsity"] for s in search if s["within"])
    floor = min(s["val_acc"] for s in search if s["within"])
    assert all((s["val_acc"] >= floor) == s["within"] for s in search)
    assert search[0]["sparsity"] == 0.5 and len(search) >= 5
    rows = list(csv.DictReader((tmp_path / "b.epochs.csv").open()))
    assert [r["phase"] for r in rows] == ["finetune"]
    assert cli.main(["prune", str(mam_model), "--method", "gmp", "--max-drop", "0.02", "--sparsity", "0.9",
                     "-o", str(tmp_path / "c.pt")]) == 2
    assert "give --sparsity or --max-drop" in capsys.readouterr().err
    assert cli.main(["prune", str(mam_model), "--method", "gmp", "--max-drop", "0.02", "--val", "0",
                     "-o", str(tmp_path / "c.pt")]) == 2
    assert "never looks at the test set" in capsys.readouterr().err


def test_structured_pruning_halves_the_hidden_neurons_within_a_point(mam_model, tmp_path, capsys):
    """The shape of the recipe's result on a small configuration: L2-norm structured pruning takes
    at least half of the hidden neurons of the digits MAM network out (simplify removes them) and,
    fine-tuned, stays within 1 point of the unpruned network."""
    assert cli.main(["eval", str(mam_model), "--json"]) == 0
    dense = json.loads(capsys.readouterr().out)["accuracy"]
    out = tmp_path / "s.pt"
    assert cli.main(["prune", str(mam_model), "--method", "ll2n", "--sparsity", "0.55", "--finetune", "10",
                     "--simplify", "-q", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "simplified to  64 -> " in text
    after = [int(v) for v in text.split("simplified to  ")[1].split()[0::2][:4]]
    assert after[0] == 64 and after[3] == 10 and after[1] + after[2] <= 64     # of 128 hidden neurons
    assert cli.main(["eval", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] >= dense - 0.01


def test_mam_from_a_trained_mac_network_needs_fewer_epochs(mam_model, tmp_path, capsys):
    """train --init: a trained MAC network's hidden layers turned MAM (vanishing contributions)
    reach the accuracy of MAM trained from scratch (15 epochs) in 10 epochs, within a point."""
    mac = tmp_path / "mac.pt"
    assert cli.main(["train", "--mode", "mac", *SMALL, "-o", str(mac)]) == 0
    out = tmp_path / "mam_from_mac.pt"
    assert cli.main(["train", "--init", str(mac), "--epochs", "10", "--vc-epochs", "4", "-q", "-o", str(out)]) == 0
    assert "(0, 2 now MAM)" in capsys.readouterr().out
    accs = {}
    for name, path in (("scratch", mam_model), ("init", out)):
        assert cli.main(["eval", str(path), "--json"]) == 0
        res = json.loads(capsys.readouterr().out)
        assert [l["mode"] for l in res["layers"]] == ["mam", "mam", "mac"]
        accs[name] = res["accuracy"]
    assert accs["init"] >= accs["scratch"] - 0.01
    # only named layers, and a network that does not fit the data, refused in one line
    assert cli.main(["train", "--init", str(mac), "--layers", "2", "--epochs", "1", "--vc-epochs", "1", "-q",
                     "-o", str(tmp_path / "one.pt")]) == 0
    assert "(2 now MAM)" in capsys.readouterr().out
    assert cli.main(["eval", str(tmp_path / "one.pt"), "--json"]) == 0
    assert [l["mode"] for l in json.loads(capsys.readouterr().out)["layers"]] == ["mac", "mam", "mac"]
    assert cli.main(["train", "--init", str(mac), "--dataset", "mnist5k", "-o", str(tmp_path / "x.pt")]) == 2
    assert "does not take the mnist5k data" in capsys.readouterr().err
    assert cli.main(["train", "--init", str(mac), "--hidden", "8", "-o", str(tmp_path / "x.pt")]) == 2
    assert "--init brings its own network" in capsys.readouterr().err


def test_sweep_early_prunes_before_convergence_and_counts_training_flops(tmp_path, capsys):
    """sweep --early: one training run per schedule, copies pruned 1, 3, 5, 10, 15 epochs after
    beta reaches 0 (those that fall before the end) and at the end, MAM and MAM -> MAC, each
    fine-tuned; the earlier the pruning, the fewer training FLOPs."""
    out = tmp_path / "early"
    assert cli.main(["sweep", "--early", "--hidden", "32,32", "--epochs", "16", "--vc-epochs", "4",
                     "--finetune", "1", "-q", "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "early.csv").open()))
    assert len(rows) == 2 * 5 * 2                       # delays 1, 3, 5, 10 and the end; MAM and MAC back
    for schedule in ("linear", "parabolic"):
        for back in ("False", "True"):
            mine = sorted((int(r["pruned_after"]), float(r["train_flops"]), float(r["saved"])) for r in rows
                          if r["schedule"] == schedule and r["mac_back"] == back)
            assert [m[0] for m in mine] == [5, 7, 9, 14, 16]
            assert [m[1] for m in mine] == sorted(m[1] for m in mine) and mine[-1][2] == 0.0
            assert all(0 < m[2] < 1 for m in mine[:-1])
    assert (out / "early.png").read_bytes()[:4] == b"\x89PNG"
    assert "after beta=0" in capsys.readouterr().out
    assert cli.main(["sweep", "--early", "--kept", "0.1,0.01", "--out", str(tmp_path / "e2")]) == 2
    assert "one --kept fraction" in capsys.readouterr().err
