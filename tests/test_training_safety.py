"""Issue 23, training side: one training per run folder (a lock), --resume of a finished run, failed starts that
leave nothing, and flags refused in one line before any work (precision, --limit-batches, --accelerator,
--min-rank). The artefact side (export, compare, evaluate, predict) is tests/test_artifact_safety.py."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from strrnn import run_folder
from strrnn.cli import train

REPO = Path(__file__).resolve().parents[1]
FSDD = REPO.parent / "shared" / "data" / "fsdd"
needs_fsdd = pytest.mark.skipif(not (FSDD / "recordings").is_dir(), reason=f"FSDD not found at {FSDD}")
DIGITS = ["--dataset", "digits", "--model", "small_cnn", "--epochs", "1", "--limit-batches", "2",
          "--no-progress-bar", "--mode", "dense"]
SPEECH = ["--dataset", "fsdd", "--data-dir", str(FSDD), "--epochs", "1", "--limit-batches", "2", "--batch-size", "50",
          "--hidden-size", "8", "--no-progress-bar"]


def one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and len(lines) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


def digests(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (relative path -> sha256)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished digits run folder (dense small CNN, one short epoch)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert train.main([*DIGITS, "--out", str(out)]) == 0
    return out


# --- bug 2: one training per run folder ----------------------------------------------------------------------------
def test_two_trainings_on_one_out_at_once_one_is_refused_the_other_finishes_intact(tmp_path):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "strrnn", "train", "--dataset", "digits", "--model", "small_cnn", "--epochs", "2",
            "--limit-batches", "5", "--no-progress-bar", "--mode", "dense", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([*args, "--seed", str(seed)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
    results = [(proc.wait(timeout=600), *proc.communicate()) for proc in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], [err[-2000:] for _, _, err in results]
    (_, _, refused), = [r for r in results if r[0] == 2]
    errors = [line for line in refused.splitlines() if "error" in line]
    assert len(errors) == 1 and "Traceback" not in refused, refused
    # the lock when they overlapped, the finished folder when the winner was that quick
    assert "is in use by another training (pid" in errors[0] or "exists; pass --resume" in errors[0], refused
    (_, winner_out, _), = [r for r in results if r[0] == 0]
    config = yaml.safe_load((out / "config.yaml").read_text())
    summary = json.loads((out / "summary.json").read_text())
    assert config["seed"] == summary["seed"] and f"run folder: {out}" in winner_out
    with (out / "metrics.csv").open() as handle:
        assert list(csv.DictReader(handle))  # one run's rows, readable
    assert not (out / run_folder.LOCK).exists()
    from strrnn.artifacts import load_exported

    load_exported(out)


def test_a_locked_run_folder_is_refused_even_with_resume_or_overwrite(finished, capsys):
    before = digests(finished)
    with run_folder.lock(finished):
        for extra in ([], ["--overwrite"], ["--resume"]):
            assert train.main([*DIGITS, "--out", str(finished), *extra]) == 2
            one_line_error(capsys, "is in use by another training", f"(pid {os.getpid()})")
    assert digests(finished) == before
    assert not (finished / run_folder.LOCK).exists()


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / run_folder.LOCK).write_text("999999999\n")  # a pid that cannot exist: its flock died with it
    held = run_folder.lock(out)
    assert (out / run_folder.LOCK).read_text() == f"{os.getpid()}\n" and held.created == []
    with pytest.raises(run_folder.RunFolderError, match="in use by another training"):
        run_folder.lock(out)
    held.release()
    assert list(out.iterdir()) == []


# --- bug 3: --resume of a finished run ---------------------------------------------------------------------------
def test_resume_of_a_finished_run_is_refused_and_changes_nothing(finished, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(finished, copy)
    for run in (finished, copy):
        before = digests(run)
        assert train.main([*DIGITS, "--out", str(run), "--resume"]) == 2
        one_line_error(capsys, "is a finished run", "nothing to resume", "--overwrite")
        assert digests(run) == before


def test_a_run_killed_while_testing_resumes_with_its_metrics_and_best_score_even_when_moved(finished, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(finished, moved)
    (moved / "summary.json").unlink()  # killed after its last checkpoint, before the summary
    assert train.main([*DIGITS, "--out", str(moved), "--resume"]) == 0
    assert (moved / "metrics.csv").read_text() == (finished / "metrics.csv").read_text()
    resumed, original = (json.loads((run / "summary.json").read_text()) for run in (moved, finished))
    assert resumed["best_val_acc"] is not None and resumed["best_val_acc"] == original["best_val_acc"]
    assert resumed["test_acc"] == original["test_acc"]


# --- bug 11: mixed precision ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("cell, precision, device, message", [
    ("fastgrnn", "16-mixed", "cpu", "hand-written kernel"),
    ("fastrnn", "bf16-mixed", "gpu", "hand-written kernel"),  # the kernel's in-place products, on any device
    ("lstm", "bf16-mixed", "cpu", "no 16-bit autocast kernel"),
    ("gru", "16-mixed", "auto", "no 16-bit autocast kernel"),
])
def test_mixed_precision_is_refused_for_recurrent_models_that_cannot_run_it(cell, precision, device, message):
    if device == "auto" and torch.cuda.is_available():
        pytest.skip("auto picks the GPU here")
    from strrnn import models

    model = models.build("keyword_spotter", in_chans=8, num_classes=3, cell=cell, hidden_size=4)
    config = {"precision": precision, "accelerator": device, "cell": cell}
    with pytest.raises(train.UsageError, match=message) as info:
        train.check_precision(config, model)
    assert "--precision 32-true" in str(info.value)


def test_mixed_precision_stays_open_to_cnns_and_to_torch_cells_on_a_gpu():
    from cnn import models as cnn_models
    from strrnn import models

    cnn = cnn_models.build("small_cnn", num_classes=10, in_chans=1)
    train.check_precision({"precision": "16-mixed", "accelerator": "cpu", "cell": "fastgrnn"}, cnn)
    lstm = models.build("keyword_spotter", in_chans=8, num_classes=3, cell="lstm", hidden_size=4)
    train.check_precision({"precision": "bf16-mixed", "accelerator": "gpu", "cell": "lstm"}, lstm)
    fastgrnn = models.build("keyword_spotter", in_chans=8, num_classes=3, cell="fastgrnn", hidden_size=4)
    train.check_precision({"precision": "32-true", "accelerator": "cpu", "cell": "fastgrnn"}, fastgrnn)


@needs_fsdd
def test_mixed_precision_on_the_cpu_is_refused_before_training_and_leaves_nothing(tmp_path, capsys):
    out = tmp_path / "new" / "run"
    assert train.main([*SPEECH, "--mode", "dense", "--precision", "bf16-mixed", "--accelerator", "cpu",
                       "--out", str(out)]) == 2
    one_line_error(capsys, "--precision bf16-mixed", "--precision 32-true")
    assert not (tmp_path / "new").exists()


# --- W16: a failed start leaves nothing ----------------------------------------------------------------------------
@needs_fsdd
def test_a_start_that_fails_in_training_leaves_nothing_so_the_same_out_is_free(tmp_path, capsys):
    out = tmp_path / "runs" / "p"
    assert train.main([*SPEECH, "--mode", "lowrank", "--target-params", "1", "--out", str(out)]) == 2
    one_line_error(capsys, "target_params=1")
    assert not (tmp_path / "runs").exists()  # the folder and the parent it created


def test_a_misconfigured_trainer_is_one_line_and_the_old_run_survives_overwrite(finished, capsys):
    before = digests(finished)
    assert train.main([*DIGITS, "--strategy", "bogus", "--overwrite", "--out", str(finished)]) == 2
    one_line_error(capsys, "invalid strategy name")
    assert digests(finished) == before


# --- W17: --overwrite accepts what strrnn wrote ---------------------------------------------------------------------
def test_overwrite_accepts_the_files_strrnn_tools_write_into_a_run(finished, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    (run / "confusion_test.csv").write_text("written by strrnn evaluate\n")
    (run / "tensorboard").mkdir()  # --logger tensorboard
    (run / "tensorboard" / "events.out").write_text("x")
    assert run_folder.foreign_entries(run) == [] and run_folder.is_run_folder(run)
    assert run_folder.check_out(run, overwrite=True) == run
    (run / "notes.txt").write_text("mine")
    with pytest.raises(run_folder.RunFolderError, match="notes.txt"):
        run_folder.check_out(run, overwrite=True)


# --- bugs 12, 13, W18: refused before any work, in one line ---------------------------------------------------------
@pytest.mark.parametrize("args, message", [
    (["--limit-batches", "1.5"], "a fraction <= 1 or a whole number of batches, got 1.5"),
    (["--limit-batches", "nan"], "--limit-batches must be > 0"),
    (["--mode", "lowrank", "--min-rank", "0"], "--min-rank 0: --mode lowrank keeps at least rank 1"),
])
def test_bad_values_are_one_line_before_any_work(tmp_path, capsys, args, message):
    assert train.main([*DIGITS, *args, "--out", str(tmp_path / "x")]) == 2
    one_line_error(capsys, message)
    assert not (tmp_path / "x").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("accelerator", ["gpu", "cuda"])
def test_a_gpu_on_a_machine_without_one_names_the_cpu(tmp_path, capsys, accelerator):
    assert train.main([*DIGITS, "--accelerator", accelerator, "--out", str(tmp_path / "x")]) == 2
    one_line_error(capsys, f"--accelerator {accelerator}: no GPU", "use --accelerator cpu")
    assert not (tmp_path / "x").exists()


def test_a_threshold_above_the_spectrum_warns_with_the_current_recipes_advice(caplog):
    from torch import nn

    from strrnn import low_rank
    from strrnn.callbacks import RankLogger

    for min_rank, kept in ((1, "only its 1 protected entry (min_rank) survive"), (0, "cut to rank 0")):
        layer = nn.Linear(6, 6)
        low_rank.lowrank(layer, "weight", factors="orthogonal", s_init=1.0, min_rank=min_rank)
        with torch.no_grad():
            low_rank.originals(layer, "weight")[1].mul_(1e-3)  # a spectrum far below the threshold
        with caplog.at_level(logging.WARNING, logger="strrnn"):
            caplog.clear()
            RankLogger("unused.csv")._warn_if_threshold_covers_spectrum(layer)
        assert kept in caplog.text and "--threshold-decay" in caplog.text and "--strength" not in caplog.text
