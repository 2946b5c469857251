"""End-to-end tests of python -m strrnn.train / compare / evaluate / export on real FSDD audio."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from strrnn.cli import train

REPO = Path(__file__).resolve().parents[1]
FSDD = REPO.parent / "shared" / "data" / "fsdd"
needs_fsdd = pytest.mark.skipif(not (FSDD / "recordings").is_dir(), reason=f"FSDD not found at {FSDD}")

# a few batches per epoch keep these runs short; the data is real
FAST = ["--dataset", "fsdd", "--data-dir", str(FSDD), "--epochs", "2", "--limit-batches", "4",
        "--batch-size", "50", "--no-progress-bar", "--hidden-size", "32"]


def run_cli(args, out: Path) -> int:
    return train.main([*args, "--out", str(out)])


def summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def subprocess_cli(module: str, *args, env=None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, **kw)


@needs_fsdd
@pytest.mark.parametrize("mode_args", [
    ["--mode", "dense"],
    ["--mode", "lowrank"],
    ["--mode", "lowrank-paper"],
    ["--mode", "lowrank-gmp", "--strength", "0.6"],
    ["--mode", "fixed-rank", "--rank-w", "8", "--rank-u", "12"],
    ["--mode", "unstructured", "--s-init", "-5"],
    ["--mode", "lowrank", "--cell", "lstm"],
])
def test_every_mode_writes_a_complete_run_folder(tmp_path, mode_args):
    out = tmp_path / "run"
    assert run_cli(FAST + mode_args, out) == 0
    for name in ("config.yaml", "metrics.csv", "ranks.csv", "report.csv", "report.md", "best.ckpt", "last.ckpt",
                 "exported.pt", "summary.json"):
        assert (out / name).is_file(), name
    s = summary(out)
    mode = mode_args[1]
    assert s["mode"] == mode and s["dataset"] == "fsdd"
    assert 0.0 <= s["test_acc"] <= 1.0 and 0.0 <= s["best_val_acc"] <= 1.0
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["mode"] == mode and config["epochs"] == 2
    if mode == "fixed-rank":
        assert s["ranks"] == {"rnn.cells.0.W": 8, "rnn.cells.0.U": 12}
        assert s["params_str"] == 8 * (32 + 32) + 12 * (32 + 32)
    if mode in ("lowrank", "lowrank-paper", "lowrank-gmp"):
        assert set(s["ranks"]) == {"rnn.cells.0.W", "rnn.cells.0.U"}
        with (out / "ranks.csv").open() as handle:
            rows = list(csv.DictReader(handle))
        assert [r["epoch"] for r in rows] == ["0", "0", "1", "1"]
        assert {r["tensor"] for r in rows} == {"W", "U"}
    if mode == "dense":
        assert s["ranks"] == {} and s["params_exported"] == s["params_dense"]
    # the exported model reproduces the test accuracy through evaluate (rebuilt from exported.pt)
    from strrnn.cli.evaluate import evaluate

    accuracy, confusion = evaluate(out)
    assert confusion.shape == (10, 10)
    assert int(confusion.values.sum()) == 300  # the whole test split (training tested on --limit-batches of it)
    assert accuracy == pytest.approx(float(confusion.values.trace()) / 300)


@needs_fsdd
@pytest.mark.parametrize("mode_args", [["--mode", "dense"], ["--mode", "lowrank"],
                                       ["--mode", "lowrank-paper"]])
def test_evaluate_reproduces_the_test_accuracy_of_training(tmp_path, mode_args):
    """The exported model, rebuilt from exported.pt by evaluate, scores exactly what training reported."""
    from strrnn.cli.evaluate import evaluate

    out = tmp_path / "run"
    args = ["--dataset", "fsdd", "--data-dir", str(FSDD), "--epochs", "2", "--batch-size", "100",
            "--no-progress-bar", "--hidden-size", "8", *mode_args]
    assert run_cli(args, out) == 0
    accuracy, confusion = evaluate(out)
    assert int(confusion.values.sum()) == 300
    assert accuracy == pytest.approx(summary(out)["test_acc"], abs=1e-6)


@needs_fsdd
def test_budget_control_lands_exactly_on_target_ranks_and_budget_from_transfers_them(tmp_path, capsys):
    out = tmp_path / "str"
    assert run_cli(FAST + ["--mode", "lowrank", "--target-rank", "5,7", "--epochs", "3"], out) == 0
    s = summary(out)
    assert s["ranks"] == {"rnn.cells.0.W": 5, "rnn.cells.0.U": 7}
    fixed = tmp_path / "fixed"
    assert run_cli(FAST + ["--mode", "fixed-rank", "--budget-from", str(out)], fixed) == 0
    assert summary(fixed)["ranks"] == {"rnn.cells.0.W": 5, "rnn.cells.0.U": 7}
    assert summary(fixed)["params_str"] == s["params_str"]
    # the same tensor names in another cell mean other shapes: refused, not silently a different budget
    capsys.readouterr()
    assert run_cli(FAST + ["--mode", "fixed-rank", "--budget-from", str(out), "--cell", "lstm"],
                   tmp_path / "lstm") == 2
    err = capsys.readouterr().err
    assert "--cell lstm here, fastgrnn there" in err and "Traceback" not in err


@needs_fsdd
@pytest.mark.parametrize("flag, value, other", [("--g", "exp", "sigmoid"), ("--s-init", "-2", "-6"),
                                                ("--threshold-decay", "0.3", "3")])
def test_each_str_knob_of_mode_lowrank_changes_the_learned_thresholds(tmp_path, flag, value, other):
    """--mode lowrank learns its thresholds: every knob it accepts changes what it learns (here: the thresholds
    logged per epoch, and the s stored in the checkpoint)."""
    thresholds, s_values = [], []
    for v in (value, other):
        out = tmp_path / v
        start = [] if flag == "--s-init" else ["--s-init", "-1"]  # where exp and sigmoid differ
        assert run_cli(FAST + ["--mode", "lowrank", "--freeze-at", "1.0", "--debias", "0", *start, flag, v], out) == 0
        with (out / "ranks.csv").open() as handle:
            thresholds.append([float(r["threshold"]) for r in csv.DictReader(handle)])
        state = torch.load(out / "last.ckpt", weights_only=True)["state_dict"]
        s_values.append(sorted(float(t) for k, t in state.items() if k.endswith("threshold.s")))
    assert thresholds[0] != thresholds[1]
    assert s_values[0] != s_values[1]


@needs_fsdd
def test_target_params_is_never_exceeded(tmp_path):
    out = tmp_path / "p"
    assert run_cli(FAST + ["--mode", "lowrank", "--target-params", "900", "--epochs", "3"], out) == 0
    s = summary(out)
    assert s["params_str"] <= 900
    # within one rank step of a matrix (64 parameters here) of the budget
    assert s["params_str"] > 900 - 64


@needs_fsdd
def test_config_file_with_command_line_override(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"dataset": "fsdd", "data_dir": str(FSDD), "mode": "fixed-rank", "rank_w": 3,
                                   "rank_u": 4, "epochs": 1, "limit_batches": 2, "hidden_size": 16,
                                   "progress_bar": False, "batch_size": 50}))
    out = tmp_path / "run"
    assert train.main(["--config", str(cfg), "--rank-u", "6", "--out", str(out)]) == 0
    assert summary(out)["ranks"] == {"rnn.cells.0.W": 3, "rnn.cells.0.U": 6}
    stored = yaml.safe_load((out / "config.yaml").read_text())
    assert stored["rank_u"] == 6 and stored["rank_w"] == 3


@pytest.mark.parametrize("args, message", [
    (["--dataset", "nope"], "unknown --dataset 'nope'; choose one of: google12"),
    (["--mode", "sparse"], "unknown --mode 'sparse'; choose one of: dense, lowrank, lowrank-paper, lowrank-gmp, "
                           "fixed-rank"),
    (["--cell", "rnn"], "unknown --cell 'rnn'; choose one of: fastgrnn, fastrnn, gru, lstm"),
    (["--mode", "lowrank", "--rank-w", "4"], "--rank-w only applies to --mode fixed-rank"),
    (["--mode", "dense", "--target-rank", "4,5"], "--target-rank only applies to --mode lowrank"),
    (["--mode", "lowrank", "--target-rank", "4"], "--target-rank takes two positive integers"),
    (["--mode", "fixed-rank"], "--mode fixed-rank needs --rank-w/--rank-u or --budget-from"),
    (["--resume", "--overwrite"], "--resume and --overwrite contradict"),
    (["--mode", "lowrnak"], "(did you mean 'lowrank'?)"),
    (["--model", "resnet5"], "unknown --model 'resnet5'; choose one of: har, keyword_spotter"),
    (["--mode", "gmp"], "--mode gmp needs exactly one of --sparsity F or --budget-from RUN_DIR"),
    (["--mode", "lowrank", "--sparsity", "0.5"], "--sparsity only applies to --mode gmp or dnw or magnitude"),
])
def test_bad_flags_exit_2_with_a_message_and_no_traceback(tmp_path, capsys, args, message):
    assert train.main([*args, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_unknown_flag_value_from_a_subprocess_has_no_traceback(tmp_path):
    result = subprocess_cli("strrnn.train", "--dataset", "nope", "--out", str(tmp_path / "x"))
    assert result.returncode == 2
    assert "choose one of" in result.stderr and "Traceback" not in result.stderr


def test_existing_run_folder_is_refused_and_untouched(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    assert train.main(["--out", str(out), "--dataset", "digits"]) == 2
    assert "exists; pass --resume" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "precious"


LOWRANK_ON_FSDD = ["--dataset", "fsdd", "--data-dir", str(FSDD), "--epochs", "4", "--limit-batches", "6",
                   "--batch-size", "50", "--hidden-size", "24", "--no-progress-bar", "--mode", "lowrank",
                   "--weight-decay", "1e-2", "--seed", "3"]
# GMP's state is its step-driven schedule and the masks it has applied so far
# (a dozen short epochs: the run must still be going when the first checkpoint appears)
GMP_ON_DIGITS = ["--dataset", "digits", "--model", "small_cnn", "--epochs", "12", "--limit-batches", "6",
                 "--batch-size", "64", "--optimizer", "sgd", "--lr", "0.1", "--no-progress-bar", "--mode", "gmp",
                 "--sparsity", "0.8", "--seed", "3"]


def val_acc_by_epoch(run: Path) -> dict[int, float]:
    with (run / "metrics.csv").open() as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("val_acc")]
    by_epoch = {int(r["epoch"]): float(r["val_acc"]) for r in rows}
    assert len(by_epoch) == len(rows), "one validation row per epoch"
    return by_epoch


@pytest.mark.parametrize("args", [pytest.param(LOWRANK_ON_FSDD, marks=needs_fsdd, id="lowrank-fsdd"),
                                  pytest.param(GMP_ON_DIGITS, id="gmp-digits")])
def test_sigkill_mid_run_then_resume_matches_uninterrupted(tmp_path, args):
    reference = tmp_path / "ref"
    first = subprocess_cli("strrnn.train", *args, "--out", str(reference))
    assert first.returncode == 0, first.stderr[-2000:]
    assert "litlogger" not in first.stdout + first.stderr  # Lightning's advert is filtered out

    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "strrnn.train", *args, "--out", str(killed)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 300
    while time.time() < deadline and not (killed / "last.ckpt").exists():
        time.sleep(0.05)
    time.sleep(0.3)  # into the next epoch
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert not (killed / "summary.json").exists()
    result = subprocess_cli("strrnn.train", *args, "--out", str(killed), "--resume")
    assert result.returncode == 0, result.stderr[-2000:]
    a, b = summary(reference), summary(killed)
    # metrics.csv keeps the rows logged before the kill: one validation row per epoch, the same values
    ref_val, res_val = val_acc_by_epoch(reference), val_acc_by_epoch(killed)
    assert sorted(res_val) == sorted(ref_val) == list(range(len(ref_val)))
    assert res_val == pytest.approx(ref_val, abs=1e-6)
    assert a["ranks"] == b["ranks"]
    assert a["test_acc"] == pytest.approx(b["test_acc"], abs=1e-6)
    assert a["best_val_acc"] == pytest.approx(b["best_val_acc"], abs=1e-6)
    ref_w = torch.load(reference / "last.ckpt", weights_only=True)["state_dict"]
    res_w = torch.load(killed / "last.ckpt", weights_only=True)["state_dict"]
    assert ref_w.keys() == res_w.keys()
    for key in ref_w:
        if ref_w[key].is_floating_point():
            assert torch.allclose(ref_w[key], res_w[key], atol=1e-5), key
        else:
            assert torch.equal(ref_w[key], res_w[key]), key


@needs_fsdd
def test_compare_evaluate_and_onnx_export_on_real_runs(tmp_path):
    runs = []
    for seed in (0, 1):
        out = tmp_path / f"fixed{seed}"
        assert run_cli(FAST + ["--mode", "fixed-rank", "--rank-w", "4", "--rank-u", "6", "--seed", str(seed)],
                       out) == 0
        runs.append(out)
    dense = tmp_path / "dense"
    assert run_cli(FAST + ["--mode", "dense"], dense) == 0
    from strrnn.cli import compare

    table = compare.compare([*runs, dense])
    assert len(table) == 2
    fixed_row = table[table["mode"] == "fixed-rank"].iloc[0]
    accs = [summary(r)["test_acc"] for r in runs]
    assert fixed_row["seeds"] == 2
    assert fixed_row["test_acc_mean"] == pytest.approx(sum(accs) / 2)
    assert fixed_row["params_str"] == 4 * 64 + 6 * 64
    assert compare.main([*map(str, runs), str(dense), "--csv", str(tmp_path / "t.csv"),
                         "--plot", str(tmp_path / "t.png")]) == 0
    assert (tmp_path / "t.png").stat().st_size > 1000
    onnx = tmp_path / "not" / "yet" / "m.onnx"  # a missing folder is created
    result = subprocess_cli("strrnn", "export", "--run", str(runs[0]), "--onnx", str(onnx))
    assert result.returncode == 0, result.stderr[-2000:]
    assert onnx.is_file() and not list(onnx.parent.glob("*.tmp"))
    assert "onnxruntime matches" in result.stdout
    result = subprocess_cli("strrnn", "evaluate", "--run", str(dense))
    assert result.returncode == 0 and "test accuracy of the exported model" in result.stdout


@needs_fsdd
def test_ddp_two_cpu_processes_keep_identical_thresholds(tmp_path):
    out = tmp_path / "ddp"
    result = subprocess_cli("strrnn.train", *FAST, "--mode", "lowrank", "--weight-decay", "1e-2",
                            "--devices", "2", "--strategy", "ddp", "--accelerator", "cpu", "--out", str(out),
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    s = summary(out)
    assert set(s["ranks"]) == {"rnn.cells.0.W", "rnn.cells.0.U"}
    state = torch.load(out / "last.ckpt", weights_only=True)["state_dict"]
    assert any(k.endswith("threshold.s") for k in state)


def test_cnn_str_budget_transfers_to_gmp_and_dnw_through_the_cli(tmp_path):
    digits = ["--dataset", "digits", "--model", "small_cnn", "--epochs", "3", "--batch-size", "64",
              "--no-progress-bar", "--optimizer", "sgd", "--lr", "0.1"]
    str_run = tmp_path / "str"
    assert run_cli(digits + ["--mode", "unstructured", "--weight-decay", "5e-2"], str_run) == 0
    learned = summary(str_run)
    assert learned["flops"] < learned["flops_dense"] and learned["sparsity"] > 0
    import pandas as pd

    budget = pd.read_csv(str_run / "report.csv")
    budget = budget[budget["module"] != "total"].set_index("module")["sparsity"]
    for mode in ("gmp", "dnw"):
        out = tmp_path / mode
        assert run_cli(digits + ["--mode", mode, "--budget-from", str(str_run)], out) == 0
        from cnn.pruning import layer_sparsity
        from strrnn.artifacts import load_exported

        small, _ = load_exported(out)
        reached = layer_sparsity(small)
        for layer, target in budget.items():
            assert abs(100 * reached[layer.removeprefix("model.")] - target) < 0.5, (mode, layer)
    with pytest.raises(SystemExit):
        train.build_parser().parse_args(["--bogus"])
    assert train.main(digits + ["--mode", "gmp", "--out", str(tmp_path / "x")]) == 2  # needs a budget
