"""--help of every command line: fast (no torch), every default shown once, choices listed, typos answered."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from strrnn.cli import COMMANDS, main, train

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "pytorch_lightning", "lightning_fabric", "torchvision", "torchmetrics", "librosa", "pandas")


def run_module(*args: str, code: str | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", code] if code else [sys.executable, "-m", "strrnn.train", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "300"})


def help_entries(text: str) -> dict[str, str]:
    """``{"--flag": its help text}`` from ``--help`` output (wrapped lines joined)."""
    entries: dict[str, str] = {}
    flag = None
    for line in text.splitlines():
        match = re.match(r"^  (-[-\w]+)", line)
        if match:
            flag = match.group(1)
            entries[flag] = line
        elif flag and line.startswith("   "):
            entries[flag] += " " + line.strip()
        else:
            flag = None
    return {k: re.sub(r"\s+", " ", v) for k, v in entries.items()}


@pytest.mark.parametrize("command", [[], *([name] for name in COMMANDS)])
def test_help_of_every_command_imports_no_torch(command):
    # a process of its own (the test session has imported them already); `strrnn CMD --help` exits through argparse
    code = (f"import sys; from strrnn.cli import main\ntry:\n    main({[*command, '--help']!r})\n"
            f"except SystemExit:\n    pass\nprint([m for m in {HEAVY!r} if m in sys.modules])")
    result = run_module(code=code)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_python_m_strrnn_train_help_imports_no_torch():
    result = run_module(code="import sys, runpy; sys.argv = ['x', '--help']\ntry:\n"
                             "    runpy.run_module('strrnn.train', run_name='__main__')\nexcept SystemExit:\n    pass\n"
                             f"print([m for m in {HEAVY!r} if m in sys.modules])")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_an_unknown_command_exits_2_naming_the_closest(capsys):
    assert main(["trian"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'trian' (did you mean 'train'?)" in err and len(err.strip().splitlines()) == 1


def test_help_shows_every_default_once_and_the_choices():
    result = run_module("--help")
    assert result.returncode == 0, result.stderr
    entries = help_entries(result.stdout)
    for flag, default in [("--epochs", "100"), ("--lr", "0.001"), ("--batch-size", "100"), ("--hidden-size", "100"),
                          ("--seed", "0"), ("--dataset", "google13"), ("--logger", "csv")]:
        assert f"(default: {default})" in entries[flag], entries[flag]
    for flag, text in entries.items():
        assert text.count("default:") <= 1, f"{flag} shows its default twice: {text}"
        assert "(default: None)" not in text, text
    assert "default: exp for lowrank and lowrank-paper, sigmoid for unstructured" in entries["--g"]
    assert "(default: 1.0 for lowrank" in entries["--threshold-decay"]
    for flag, names in [("--dataset", train.HELP_NAMES["dataset"]), ("--model", train.HELP_NAMES["model"]),
                        ("--optimizer", train.HELP_NAMES["optimizer"]), ("--cell", ["fastgrnn", "lstm"]),
                        ("--mode", ["dense", "lowrank", "fixed-rank", "unstructured"]), ("--pooling", ["last", "mean"]),
                        ("--logger", ["csv", "tensorboard"]), ("--precision", ["bf16-mixed"])]:
        assert all(name in entries[flag] for name in names), entries[flag]
    assert "Speech Commands: 0.003" in entries["--lr"]  # the data set's recipe is said, not hidden


def test_help_names_match_the_registries():
    from strrnn import artifacts, data, threshold
    from strrnn.cells import available_cells
    from strrnn.low_rank import FACTOR_KINDS
    from strrnn.modes import MODES
    from strrnn.task import OPTIMIZERS, SCHEDULERS

    assert list(train.HELP_NAMES["dataset"]) == artifacts.dataset_names()
    assert list(train.HELP_NAMES["model"]) == artifacts.model_names()
    assert list(train.HELP_NAMES["cell"]) == available_cells()
    assert list(train.HELP_NAMES["factors"]) == list(FACTOR_KINDS)
    assert list(train.HELP_NAMES["g"]) == threshold.threshold_functions()
    assert train.MODE_SUMMARIES == {name: mode.summary for name, mode in MODES.items()}
    assert list(train.HELP_NAMES["features"]) == list(data.PRESETS)
    assert list(train.HELP_NAMES["optimizer"]) == list(OPTIMIZERS)
    assert list(train.HELP_NAMES["scheduler"]) == list(SCHEDULERS)


@pytest.mark.parametrize("args, hint", [
    (["--epoch", "3"], "(did you mean '--epochs'?)"),
    (["--datadir=x"], "(did you mean '--data-dir'?)"),
    (["--hiden-size", "8"], "(did you mean '--hidden-size'?)"),
])
def test_a_mistyped_flag_exits_2_on_one_line_naming_the_closest(capsys, args, hint):
    with pytest.raises(SystemExit) as exit_:
        train.main(args)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert hint in err and "unrecognized arguments" in err
    assert len(err.strip().splitlines()) == 1


def test_a_flag_unlike_any_gets_no_hint(capsys):
    with pytest.raises(SystemExit):
        train.main(["--bogus"])
    err = capsys.readouterr().err
    assert "unrecognized arguments: --bogus" in err and "did you mean" not in err


def test_a_mistyped_flag_from_a_subprocess_has_no_traceback():
    result = run_module("--epoch", "3")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "python -m strrnn.train: error: unrecognized arguments: --epoch 3 (did you mean '--epochs'?); see --help"]


@pytest.mark.parametrize("args, message", [
    (["--dataset", "fsd"], "unknown --dataset 'fsd'; choose one of: google12"),
    (["--dataset", "fsd"], "(did you mean 'fsdd'?)"),
    (["--logger", "tensorbord"], "unknown --logger 'tensorbord'; choose one of: csv, tensorboard (did you mean "
                                 "'tensorboard'?)"),
    (["--pooling", "max"], "unknown --pooling 'max'; choose one of: last, mean"),
])
def test_a_mistyped_name_is_answered_with_the_closest(tmp_path, capsys, args, message):
    assert train.main([*args, "--out", str(tmp_path / "x")]) == 2
    assert message in capsys.readouterr().err


def test_logger_csv_is_always_kept_and_a_config_file_may_name_one(tmp_path):
    out = ["--out", str(tmp_path / "x")]
    assert train.parse_config(out)["logger"] == ["csv"]
    assert train.parse_config(["--logger", "tensorboard", *out])["logger"] == ["csv", "tensorboard"]
    assert train.parse_config(["--logger", "csv", "tensorboard", *out])["logger"] == ["csv", "tensorboard"]
    config = tmp_path / "c.yaml"
    config.write_text("logger: tensorboard\n")
    assert train.parse_config(["--config", str(config), *out])["logger"] == ["csv", "tensorboard"]
    assert "logger" in train.OPERATIONAL  # resuming or reusing a run may change it


def test_help_states_the_mode_defaults_the_registry_uses():
    from strrnn.modes import MODES, STR_DECAY

    assert f"(default: {STR_DECAY} for lowrank" in help_entries(run_module("--help").stdout)["--threshold-decay"]
    assert MODES["lowrank-gmp"].defaults({})["strength"] == 0.6
