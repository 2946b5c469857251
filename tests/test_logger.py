"""--logger tensorboard: event files with the rank/* scalars beside the CSV log, or a clear error without the extra."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from strrnn.cli import train

REPO = Path(__file__).resolve().parents[1]
FSDD = REPO.parent / "shared" / "data" / "fsdd"
TINY = ["--dataset", "fsdd", "--data-dir", str(FSDD), "--epochs", "1", "--limit-batches", "2", "--batch-size", "50",
        "--hidden-size", "16", "--no-progress-bar", "--mode", "lowrank"]


@pytest.mark.skipif(not (FSDD / "recordings").is_dir(), reason=f"FSDD not found at {FSDD}")
def test_tensorboard_writes_rank_scalars_and_the_csv_log_stays(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    assert train.main([*TINY, "--logger", "tensorboard", "--out", str(out)]) == 0
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"rank/rnn.cells.0.W", "rank/rnn.cells.0.U", "val_acc"} <= scalars, scalars
    # the CSV log is always written: the run folder's metrics.csv and --resume read it
    assert "rank/rnn.cells.0.W" in (out / "metrics.csv").read_text().splitlines()[0]


def test_missing_tensorboard_names_the_extra_before_anything_is_written(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard now fails as if not installed
    out = tmp_path / "run"
    assert train.main(["--dataset", "digits", "--epochs", "1", "--logger", "csv", "tensorboard",
                       "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--logger tensorboard needs the [tensorboard] extra: pip install 'strrnn[tensorboard]'" in err
    assert "Traceback" not in err
    assert not out.exists()
