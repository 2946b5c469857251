"""python -m strrnn.train never deletes what it did not write, and never reports a broken run as a success."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from strrnn import run_folder
from strrnn.cli import train

DIGITS = ["--dataset", "digits", "--model", "small_cnn", "--epochs", "1", "--limit-batches", "2",
          "--no-progress-bar"]


def fake_run(path: Path) -> Path:
    """A finished-looking run folder (what a run writes, nothing else)."""
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump({"dataset": "digits", "mode": "dense", "out": str(path)}))
    (path / "summary.json").write_text("{}")
    (path / "logs").mkdir()
    (path / "logs" / "metrics.csv").write_text("epoch\n0\n")
    return path


def error_of(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


# --- item 1: --overwrite -------------------------------------------------------------------------------------
def test_overwrite_with_a_data_dir_typo_deletes_nothing(tmp_path, capsys):
    user = tmp_path / "userdir"
    (user / "thesis").mkdir(parents=True)
    (user / "thesis" / "chapter1.tex").write_text("precious")
    args = ["--dataset", "fsdd", "--data-dir", str(tmp_path / "typo"), "--mode", "dense", "--overwrite"]
    assert train.main([*args, "--out", str(user)]) == 2
    assert "not a strrnn run folder" in error_of(capsys)
    assert (user / "thesis" / "chapter1.tex").read_text() == "precious"


def test_overwrite_of_a_finished_run_keeps_it_until_the_new_inputs_are_valid(tmp_path, capsys):
    run = fake_run(tmp_path / "run")
    args = ["--dataset", "fsdd", "--data-dir", str(tmp_path / "typo"), "--mode", "dense", "--overwrite"]
    assert train.main([*args, "--out", str(run)]) == 2
    assert "fsdd" in error_of(capsys).lower()
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml", "logs", "summary.json"]


def test_overwrite_replaces_a_real_run_folder(tmp_path):
    out = tmp_path / "run"
    assert train.main([*DIGITS, "--mode", "dense", "--out", str(out)]) == 0
    first = (out / "summary.json").stat().st_mtime_ns
    assert (out / run_folder.MARKER).is_file()
    assert train.main([*DIGITS, "--mode", "dense", "--out", str(out), "--overwrite"]) == 0
    assert (out / "summary.json").stat().st_mtime_ns != first


@pytest.mark.parametrize("out", ["", " ", ".", "..", "~", "/"])
def test_protected_out_values_are_refused(tmp_path, monkeypatch, capsys, out):
    home = tmp_path / "home"
    work = home / "work"
    work.mkdir(parents=True)
    (work / "keep.txt").write_text("x")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    assert train.main([*DIGITS, "--out", out, "--overwrite"]) == 2
    err = error_of(capsys)
    assert "--out" in err
    assert (work / "keep.txt").read_text() == "x"


def test_out_that_is_a_file_or_read_only_is_refused(tmp_path, capsys):
    target = tmp_path / "file.txt"
    target.write_text("x")
    assert train.main([*DIGITS, "--out", str(target)]) == 2
    assert "is an existing file" in error_of(capsys)
    if os.geteuid() == 0:
        pytest.skip("root writes everywhere: the read-only case cannot be reproduced")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert train.main([*DIGITS, "--out", str(locked / "run")]) == 2
    assert "cannot write" in error_of(capsys)


PATHS = ["", ".", "..", "~", "/", "user", "user/", "user/..", "run", "run/", "./run", "run/../run", "mixed",
         "link", "file.txt", "new", "new/deeper", "run/logs", "user/thesis", "../outside"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(out=st.sampled_from(PATHS) | st.text(alphabet="./~ab", max_size=8), overwrite=st.booleans(),
       resume=st.booleans())
def test_no_flag_combination_deletes_anything_outside_a_run_folder(monkeypatch, out, overwrite, resume):
    """check_out + create (what --out/--overwrite/--resume reach) over many --out values."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        work = root / "home" / "work"
        (work / "user" / "thesis").mkdir(parents=True)
        precious = [work / "user" / "thesis" / "chapter1.tex", work / "mixed" / "notes.txt", work / "file.txt",
                    root / "outside" / "data.bin"]
        fake_run(work / "run")
        fake_run(work / "mixed")
        (root / "outside").mkdir()
        for path in precious:
            path.write_text("precious")
        (work / "link").symlink_to(work / "run")
        monkeypatch.setenv("HOME", str(root / "home"))
        monkeypatch.chdir(work)
        try:
            path = run_folder.check_out(out, resume=resume, overwrite=overwrite)
            run_folder.create(path, overwrite=overwrite)
        except run_folder.RunFolderError:
            pass
        for path in precious:
            assert path.read_text() == "precious", (out, overwrite, resume, path)
        if not (overwrite and Path(out.strip() or ".").resolve() == (work / "run").resolve()):
            assert (work / "run" / "summary.json").is_file(), (out, overwrite, resume)


# --- item 4: a diverged run is not a success ----------------------------------------------------------------
def test_huge_learning_rate_stops_the_run_and_exports_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    code = train.main([*DIGITS, "--mode", "dense", "--lr", "1e30", "--optimizer", "sgd", "--out", str(out)])
    assert code == 1
    assert "non-finite" in error_of(capsys)
    assert not (out / "exported.pt").exists() and not (out / "summary.json").exists()


# --- items 5, 6 and the weak messages: refused before any work -------------------------------------------------
@pytest.mark.parametrize("args, message", [
    (["--limit-batches", "0"], "--limit-batches must be > 0"),
    (["--devices", "0"], "--devices must be a positive number"),
    (["--hidden-size", "3000000"], "--hidden-size 3000000 is too large"),
    (["--threshold-lr", "0"], "--threshold-lr must be > 0"),
    (["--mode", "lowrank-gmp", "--freeze-at", "1.5"], "--freeze-at must be <= 1, got 1.5"),
    (["--mode", "lowrank-gmp", "--factors", "free"], "needs --factors orthogonal"),
    (["--mode", "lowrank-gmp", "--threshold-decay", "1e-2"], "spectral GMP drives its thresholds: its knob is "
                                                             "--strength"),
    (["--mode", "lowrank", "--strength", "0.6"], "--mode lowrank's knob is --threshold-decay"),
    (["--mode", "lowrank-paper", "--freeze-at", "0.5"], "the paper's recipe has no fine-tuning phase"),
    (["--precision", "half"], "unknown --precision 'half'"),
])
def test_bad_values_are_refused_before_any_work(tmp_path, capsys, args, message):
    assert train.main([*DIGITS, *args, "--out", str(tmp_path / "x")]) == 2
    assert message in error_of(capsys)
    assert not (tmp_path / "x").exists()


def test_yaml_values_go_through_each_flags_type(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("freeze_at: 6e-1\nlr: 3e-3\nepochs: '7'\nprogress_bar: false\ntarget_rank: [3, 4]\n")
    parsed = train.parse_config(["--config", str(config), "--mode", "lowrank", "--out", str(tmp_path / "x")])
    assert parsed["freeze_at"] == 0.6 and parsed["lr"] == 0.003 and parsed["epochs"] == 7
    assert parsed["progress_bar"] is False and parsed["target_rank"] == [3, 4]
    config.write_text("threshold_decay: 1e-2\n")  # YAML 1.1 reads 1e-2 as a string
    parsed = train.parse_config(["--config", str(config), "--mode", "unstructured", "--out", str(tmp_path / "x")])
    assert parsed["threshold_decay"] == 0.01


@pytest.mark.parametrize("text, message", [
    ("lr: 1\n  bad: [oops\n", "not valid YAML at line"),
    ("lr: fast\n", "lr: expected a float, got 'fast'"),
    ("epoch: 3\n", "unknown key 'epoch' (did you mean 'epochs'?)"),
    ("overwrite: 3\n", "overwrite: expected true or false"),
    ("- a\n- b\n", "expected a mapping"),
])
def test_bad_config_files_are_one_line_errors(tmp_path, capsys, text, message):
    config = tmp_path / "c.yaml"
    config.write_text(text)
    assert train.main(["--config", str(config), "--out", str(tmp_path / "x")]) == 2
    assert message in error_of(capsys)


def test_resume_without_a_checkpoint_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    fake_run(out)
    assert train.main([*DIGITS, "--out", str(out), "--resume"]) == 2
    assert "no last.ckpt" in error_of(capsys)
    assert train.main([*DIGITS, "--out", str(tmp_path / "never"), "--resume"]) == 2
    assert "no run to continue" in error_of(capsys)


def test_corrupt_checkpoint_is_named_and_never_suggests_unsafe_loading(tmp_path, capsys):
    out = tmp_path / "run"
    assert train.main([*DIGITS, "--mode", "dense", "--out", str(out)]) == 0
    capsys.readouterr()
    (out / "summary.json").unlink()  # as if killed while testing: a finished run is not resumed at all
    (out / "last.ckpt").write_bytes(b"not a checkpoint")
    assert train.main([*DIGITS, "--mode", "dense", "--out", str(out), "--resume"]) == 2
    err = error_of(capsys)
    assert "cannot read" in err and "last.ckpt" in err and "weights_only=False" not in err
    assert (out / "logs" / "metrics.csv").is_file()  # a refused resume resets nothing
    data = (out / "exported.pt").read_bytes()
    (out / "exported.pt").write_bytes(data[: len(data) // 2])
    from strrnn.cli.evaluate import main as evaluate_main

    assert evaluate_main(["--run", str(out)]) == 2
    err = error_of(capsys)
    assert "exported.pt" in err and "weights_only=False" not in err


def test_relative_data_dir_is_stored_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    parsed = train.parse_config(["--dataset", "fsdd", "--data-dir", "data/fsdd", "--out", "x"])
    assert parsed["data_dir"] == str(tmp_path / "data" / "fsdd")


# --- a full disk while checkpointing -------------------------------------------------------------------------
def test_checkpoint_on_a_full_disk_says_disk_full(tmp_path, monkeypatch):
    import subprocess

    import torch

    from strrnn.callbacks import AtomicCheckpointIO
    from strrnn.fileio import DiskFullError

    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)],
                             capture_output=True).returncode == 0
    try:
        if not mounted:  # no root: what torch.save raises on a full disk
            def short_write(obj, f, *a, **k):
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

            monkeypatch.setattr(torch, "save", short_write)
        with pytest.raises(DiskFullError, match=r"disk full while writing .*last.ckpt") as info:
            AtomicCheckpointIO().save_checkpoint({"w": torch.zeros(100_000)}, small / "last.ckpt")
        assert "unexpected pos" not in str(info.value)
        assert list(small.iterdir()) == []
    finally:
        if mounted:
            import gc

            gc.collect()  # torch.save's failed writer may still hold the file open
            subprocess.run(["umount", "-l", str(small)], check=False)


# --- compare on broken runs ------------------------------------------------------------------------------------
def _summary(path: Path, seed: int, test_acc) -> Path:
    import json

    path.mkdir(parents=True)
    (path / "summary.json").write_text(json.dumps({
        "dataset": "fsdd", "mode": "dense", "cell": "fastgrnn", "factors": "free", "seed": seed, "ranks": {},
        "weight_decay": 1e-3, "threshold_decay": 1e-3, "test_acc": test_acc, "params_str": 0,
        "params_str_dense": 0, "params_exported": 100}))
    return path


def test_compare_leaves_out_broken_runs_and_says_so(tmp_path, capsys):
    from strrnn.cli import compare

    good = [_summary(tmp_path / f"ok{s}", s, 0.5 + 0.1 * s) for s in (0, 1)]
    broken = _summary(tmp_path / "broken", 2, None)
    with pytest.warns(UserWarning, match="left out 1 run.* without a test accuracy: .*broken"):
        table = compare.compare([*good, broken])
    assert len(table) == 1 and table.iloc[0]["seeds"] == 2
    assert table.iloc[0]["test_acc_mean"] == pytest.approx(0.55)
    assert "nan" not in compare.to_markdown(table)
    with pytest.warns(UserWarning):
        assert compare.main([str(broken), "--csv", str(tmp_path / "t.csv"), "--plot", str(tmp_path / "t.png")]) == 2
    assert "none of the runs has a test accuracy" in error_of(capsys)


def test_speech_commands_defaults_are_its_measured_recipe_unless_overridden(tmp_path):
    out = ["--out", str(tmp_path / "x"), "--mode", "dense"]
    config = train.parse_config(["--dataset", "google12", *out])
    assert (config["pooling"], config["lr"], config["augment"]) == ("mean", 3e-3, True)
    config = train.parse_config(["--dataset", "google12", "--pooling", "last", "--no-augment", *out])
    assert (config["pooling"], config["lr"], config["augment"]) == ("last", 3e-3, False)
    file = tmp_path / "c.yaml"
    file.write_text("lr: 1e-3\n")
    assert train.parse_config(["--dataset", "google12", "--config", str(file), *out])["lr"] == 1e-3
    config = train.parse_config(["--dataset", "fsdd", *out])
    assert (config["pooling"], config["lr"], config["augment"]) == ("last", 1e-3, False)


# --- runs written by an earlier version ---------------------------------------------------------------------------
def test_resuming_a_run_of_an_earlier_version_works_or_says_what_to_do(tmp_path, capsys):
    old = {**train.parse_config(["--mode", "dense", "--out", str(tmp_path / "x")]), "schedule_end": 0.4}
    old.pop("freeze_at", None)
    train.check_resumable(old, tmp_path)  # 0.1's dense run: its GMP setting was never read, it resumes
    with pytest.raises(train.UsageError, match=r"strrnn 0.1, whose --mode lowrank was spectral GMP.*--mode "
                                               r"lowrank-gmp --strength 0.6"):
        train.check_resumable({**old, "mode": "lowrank", "strength": 0.6}, tmp_path)
    with pytest.raises(train.UsageError, match=r"settings this version does not know \(bogus_knob\)"):
        train.check_resumable({**old, "bogus_knob": 1, "strrnn_version": "0.2.0"}, tmp_path)
    # through the command line: one line, exit 2, nothing touched
    run = tmp_path / "old-run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({**old, "mode": "lowrank", "strength": 0.6, "out": str(run)}))
    (run / "last.ckpt").write_bytes(b"not read")
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    assert train.main([*DIGITS, "--out", str(run), "--resume"]) == 2
    err = error_of(capsys)
    assert "spectral GMP" in err and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_a_run_folder_records_the_version_that_wrote_it(tmp_path):
    import strrnn

    out = tmp_path / "r"
    assert train.main([*DIGITS, "--mode", "dense", "--out", str(out)]) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["strrnn_version"] == strrnn.__version__
