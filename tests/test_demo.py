"""The demo (strrnn demo): dense and low-rank STR trained side by side and compared in one table."""

from __future__ import annotations

from pathlib import Path

import pytest

from strrnn.cli import demo

REPO = Path(__file__).resolve().parents[1]
FSDD = REPO.parent / "shared" / "data" / "fsdd"


def summary(mode: str, **over) -> dict:
    base = {"mode": mode, "test_acc": 0.905, "ranks": {}, "params_str": 13200, "params_str_dense": 13200,
            "params_exported": 14412, "size_fp32_kb": 56.3, "size_int8_kb": 14.7, "wall_time_s": 61.2}
    return {**base, **over}


def test_the_table_puts_dense_and_str_side_by_side():
    table = demo.side_by_side({
        "dense": summary("dense"),
        "lowrank": summary("lowrank", test_acc=0.9133, ranks={"rnn.cells.0.W": 13, "rnn.cells.0.U": 23},
                           params_str=6316, params_exported=7528, size_fp32_kb=29.4, size_int8_kb=8.0),
    })
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in table.splitlines()[2:]}
    assert table.splitlines()[0] == "| | dense | lowrank |"
    assert rows["test accuracy"] == ["90.5%", "91.3%"]
    assert rows["ranks of W, U"] == ["full", "W 13, U 23"]
    assert rows["W, U parameters"] == ["100%", "6,316 of 13,200 (48%)"]
    assert rows["model parameters"] == ["14,412", "7,528"]
    assert rows["size fp32 / int8"] == ["56.3 / 14.7 KB", "29.4 / 8.0 KB"]


def test_mode_and_out_belong_to_the_demo(capsys):
    with pytest.raises(SystemExit) as exit_:
        demo.main(["--mode", "dense"])
    assert exit_.value.code == 2
    assert "--mode and --out are the demo's own" in capsys.readouterr().err


def test_a_bad_flag_is_one_line_and_status_2(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("dataset: fsdd\nepochs: 1\n")
    assert demo.main(["--config", str(config), "--out", str(tmp_path / "o"), "--epochs", "-3"]) == 2
    assert "--epochs" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # nothing trained, nothing written


@pytest.mark.slow
@pytest.mark.skipif(not (FSDD / "recordings").is_dir(), reason="needs ../shared/data/fsdd")
def test_both_runs_train_and_the_table_is_written(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(f"dataset: fsdd\ndata_dir: {FSDD}\nepochs: 2\nlimit_batches: 2\nhidden_size: 16\n")
    assert demo.main(["--config", str(config), "--out", str(tmp_path / "demo")]) == 0
    table = (tmp_path / "demo" / "comparison.md").read_text()
    assert table.startswith("| | dense | lowrank |")
    for mode in ("dense", "lowrank"):
        assert (tmp_path / "demo" / mode / "summary.json").is_file()
