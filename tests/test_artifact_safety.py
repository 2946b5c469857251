"""Issue 23, the artefact side: export, compare, evaluate and predict never write into a run's files, check every
output before writing anything, and answer damaged runs, bad paths and odd inputs in one line.

One finished FSDD run folder is trained here (a few seconds); the property test fakes ONNX tracing, the plots and
the scoring (their files are written through the same paths), the other tests run the tools for real."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import strrnn
from strrnn import run_folder
from strrnn.cli import compare, train
from strrnn.cli.data import main as data_main
from strrnn.cli.evaluate import main as evaluate_main
from strrnn.cli.export import main as export_main
from strrnn.cli.predict import main as predict_main
from strrnn.predictor import InputError, InputWarning

REPO = Path(__file__).resolve().parents[1]
FSDD = REPO.parent / "shared" / "data" / "fsdd"
pytestmark = pytest.mark.skipif(not (FSDD / "recordings").is_dir(), reason=f"FSDD not found at {FSDD}")
CLIP = FSDD / "recordings" / "3_george_0.wav"


def own_files(run: Path) -> dict[str, str]:
    """The run's own files (everything under the entries a run writes) -> sha256."""
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(run.rglob("*"))
            if p.is_file() and p.relative_to(run).parts[0] in run_folder.RUN_ENTRIES}


def all_files(*folders: Path) -> dict[str, str]:
    out = {}
    for folder in folders:
        for p in sorted(folder.rglob("*")):
            if p.is_file() and not p.is_symlink():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def one_line_error(err: str, *needles: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and len(lines) == 1 and ": error: " in lines[0], err
    for needle in needles:
        assert needle in err, err


@contextlib.contextmanager
def read_only(folder: Path, source: Path | None = None):
    """``folder`` on a read-only file system (a tmpfs remounted read-only, holding a copy of ``source``); without
    the rights to mount, a folder without write permission (which root ignores: then the test is skipped)."""
    folder.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(folder)],
                             capture_output=True).returncode == 0
    if not mounted and os.geteuid() == 0:
        pytest.skip("root without mount: a read-only folder cannot be made")
    try:
        if source is not None:
            shutil.copytree(source, folder, dirs_exist_ok=True)
        if mounted:
            subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True, capture_output=True)
        else:
            for p in [folder, *folder.rglob("*")]:
                p.chmod(p.stat().st_mode & ~0o222)
        yield folder
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], check=False)
        else:
            for p in [folder, *folder.rglob("*")]:
                p.chmod(p.stat().st_mode | 0o200)


@pytest.fixture(scope="module")
def run(tmp_path_factory, one_thread) -> Path:
    """A finished FSDD run folder (dense FastGRNN, hidden 8, one short epoch): every file a run writes."""
    out = tmp_path_factory.mktemp("artefacts") / "run"
    assert train.main(["--dataset", "fsdd", "--data-dir", str(FSDD), "--epochs", "1", "--limit-batches", "2",
                       "--batch-size", "50", "--hidden-size", "8", "--no-progress-bar", "--mode", "dense",
                       "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def sandbox(run, tmp_path_factory):
    """Paths around the run: a file used as a folder, a folder, a link to the run, a FIFO, a read-only mount."""
    base = tmp_path_factory.mktemp("sandbox")
    shutil.copy(CLIP, base / "good.wav")
    (base / "folder").mkdir()
    (base / "link").symlink_to(run)
    os.mkfifo(base / "fifo")
    with contextlib.ExitStack() as stack:
        try:
            ro = stack.enter_context(read_only(base / "ro"))
        except pytest.skip.Exception:
            ro = base / "good.wav" / "ro"  # no read-only mount here: another unwritable place
        yield {"run": run, "base": base, "link": base / "link", "fifo": base / "fifo", "ro": ro}


# --- the property: any output path given to any tool leaves the run's own files byte-identical ----------------------
PREFIXES = ["{run}", "{run}/logs", "{run}/.", "{run}/../run", "{link}", "{link}/logs", "{base}", "{base}/folder",
            "{base}/good.wav", "{base}/nodir/sub", "{ro}", "/proc"]
NAMES = ["exported.pt", "metrics.csv", "summary.json", "config.yaml", "best.ckpt", "last.ckpt", ".strrnn-run",
         "report.md", "ranks.csv", "logs", "metrics.csv", "m.onnx", "c.csv", "p.png", "p.json",
         "confusion_test.csv"]
SPECIAL = ["", "{run}", "{link}", "{fifo}", "{base}/folder", "{base}/good.wav"]


def _paths(prefixes, names):
    return st.builds(lambda prefix, name: f"{prefix}/{name}", st.sampled_from(prefixes), st.sampled_from(names))


# writable places get a third of the draws, so that the tools also run to the end and write
FINE = ["{base}", "{base}/folder", "{base}/nodir/sub", "{run}", "{link}"]
PATHS = st.sampled_from(SPECIAL) | _paths(PREFIXES, NAMES) | _paths(FINE, ["m.onnx", "c.csv", "p.png"])
PLOTS = PATHS | _paths(FINE, ["p.png", "p.svg"])
TABLES = PATHS | _paths(FINE, ["c.csv", "t.txt"])


@pytest.fixture
def fast_tools(monkeypatch, run):
    """ONNX tracing, onnxruntime, quantization, the plot and the scoring replaced by stand-ins that write (or
    score) at once through the same output paths; ``calls`` records the scorings."""
    from strrnn.artifacts import load_exported
    from strrnn.cli import evaluate as evaluate_cli
    from strrnn.deploy import onnx_graph
    from strrnn.fileio import atomic_write_bytes

    model, payload = load_exported(run)

    class Session:
        def run(self, _names, feeds):
            with torch.no_grad():
                return [model(torch.from_numpy(feeds["features"])).numpy()]

    monkeypatch.setattr(onnx_graph, "_trace_onnx", lambda _model, _shape, path: Path(path).write_bytes(b"onnx"))
    monkeypatch.setattr(onnx_graph, "_session", lambda _ort, _path: Session())
    monkeypatch.setattr(onnx_graph, "_quantize_int8", lambda _fp32, out: Path(out).write_bytes(b"int8"))

    def write_checked(_ort, _clip, _step, path, _inputs, expected, _atol, _what):
        # the recurrent models' hand-built clip and step graphs, written through the same paths
        atomic_write_bytes(path, b"onnx")
        atomic_write_bytes(onnx_graph.step_path(path), b"onnx step")
        return expected, 0.0, expected

    monkeypatch.setattr(onnx_graph, "_write_checked", write_checked)
    monkeypatch.setattr(compare, "plot", lambda _table, path, title=None: atomic_write_bytes(path, b"png"))
    calls = []

    def scored(*args, **kwargs):
        calls.append(args)
        names = payload["class_names"]
        return 0.5, pd.DataFrame(np.eye(len(names), dtype=int), index=names, columns=names)

    monkeypatch.setattr(evaluate_cli, "evaluate", scored)
    return calls


def _argv(tool: str, run: Path, first: str, second: str, third: str | None) -> tuple[list[str], list[str]]:
    """The command line and the output paths it names."""
    if tool == "export":  # each ONNX file comes with its per-frame step graph beside it
        from strrnn.deploy.onnx_graph import step_path

        return ["--run", str(run), "--onnx", first, "--int8", second], [first, second, *(
            str(step_path(path)) for path in (first, second) if path)]
    if tool == "compare":  # the run logged no rank: a --ranks-plot is refused, before anything is written
        ranks = ["--ranks-plot", third] if third is not None else []
        return [str(run), "--csv", first, "--plot", second, *ranks], [first, second]
    return ["--run", str(run), "--confusion", first], [first]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tool=st.sampled_from(["export", "compare", "evaluate"]), data=st.data())
def test_no_output_path_changes_a_runs_own_files_or_writes_before_refusing(sandbox, fast_tools, capsys, tool, data):
    places = {k: str(v) for k, v in sandbox.items()}
    first = data.draw(TABLES if tool == "compare" else PATHS, label="first").format(**places)
    second = data.draw(PLOTS if tool == "compare" else PATHS, label="second").format(**places)
    third = data.draw(st.none() | st.none() | PLOTS, label="third")
    run, base = sandbox["run"], sandbox["base"]
    argv, outputs = _argv(tool, run, first, second, third if third is None else third.format(**places))
    mine, everything, scorings = own_files(run), all_files(run, base), len(fast_tools)
    main = {"export": export_main, "compare": compare.main, "evaluate": evaluate_main}[tool]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(argv)
    err = capsys.readouterr().err
    event(f"{tool} rc={code}")  # --hypothesis-show-statistics: how often each tool refused or wrote
    assert own_files(run) == mine, (tool, argv)
    assert code in (0, 2) and "Traceback" not in err, (tool, argv, err)
    changed = {path for path, digest in all_files(run, base).items() if everything.get(path) != digest}
    if code == 2:  # refused: before anything was written or scored
        one_line_error(err)
        assert not changed and len(fast_tools) == scorings, (tool, argv, changed)
    else:
        written = {os.path.realpath(path) for path in outputs}
        assert {os.path.realpath(path) for path in changed} <= written, (tool, argv, changed)


# --- bug 4 and the other ways to lose a run's files ---------------------------------------------------------------
def test_export_never_overwrites_the_runs_model(run, capsys):
    before = own_files(run)
    assert export_main(["--run", str(run), "--onnx", str(run / "exported.pt")]) == 2
    one_line_error(capsys.readouterr().err, "would overwrite exported.pt of the run folder")
    assert own_files(run) == before
    assert strrnn.load(run, device="cpu").predict([CLIP])  # the run still predicts


def test_output_paths_that_cannot_be_written_are_one_line_errors(run, sandbox, capsys):
    base = sandbox["base"]
    cases = [
        (export_main, ["--run", str(run), "--onnx", "/proc/m.onnx"], "cannot create files in /proc"),
        (export_main, ["--run", str(run), "--onnx", str(base / "good.wav" / "m.onnx")], "good.wav is a file"),
        (export_main, ["--run", str(run), "--onnx", str(sandbox["fifo"])], "not a regular file"),
        (compare.main, [str(run), "--csv", str(base / "folder")], "is a folder; give a file name"),
        (compare.main, [str(run), "--csv", str(base / "never.csv"), "--plot", str(base / "p.png"), "--ranks-plot",
                        str(base / "p.png")], "name the same file"),
        (data_main, ["download", "fsdd", "--root", "/proc/fsdd"], "cannot create files in /proc"),
        (data_main, ["download", "fsdd", "--root", str(base / "good.wav")], "is an existing file"),
    ]
    if sandbox["ro"].name == "ro":
        cases.append((export_main, ["--run", str(run), "--onnx", str(sandbox["ro"] / "m.onnx")],
                      "Read-only file system"))
    for main, argv, message in cases:
        assert main(argv) == 2, argv
        one_line_error(capsys.readouterr().err, message)
    assert not (base / "never.csv").exists()


def test_compare_writes_nothing_when_one_output_is_bad_and_creates_missing_folders(run, tmp_path, capsys):
    before = own_files(run)
    for argv, message in (([str(run), "--csv", str(run / "metrics.csv"), "--plot", str(run / "summary.json")],
                           "would overwrite metrics.csv"),
                          ([str(run), "--csv", str(tmp_path / "c.csv"), "--plot", str(tmp_path / "p.json")],
                           "matplotlib cannot write .json files")):
        assert compare.main(argv) == 2
        one_line_error(capsys.readouterr().err, message)
    assert own_files(run) == before and not (tmp_path / "c.csv").exists()
    csv_file, png = tmp_path / "nodir" / "sub" / "c.csv", tmp_path / "nodir" / "p.png"
    assert compare.main([str(run), "--csv", str(csv_file), "--plot", str(png)]) == 0
    assert pd.read_csv(csv_file)["seeds"].tolist() == [1] and png.read_bytes()[:4] == b"\x89PNG"


# --- bug 5: one run counts once -----------------------------------------------------------------------------------
def test_compare_counts_one_run_once_under_any_path_or_as_a_copy(run, tmp_path, monkeypatch):
    shutil.copytree(run, tmp_path / "copy")
    monkeypatch.chdir(run.parent)
    with pytest.warns(UserWarning) as caught:
        table = compare.compare([str(run), "run", "./run", str(tmp_path / "copy")])
    assert table["seeds"].tolist() == [1]
    text = " ".join(str(w.message) for w in caught)
    assert "run is " in text and "counted once" in text and "copy of" in text


# --- bug 7: evaluate on a read-only run ---------------------------------------------------------------------------
def test_evaluate_on_a_read_only_run_prints_the_accuracy_and_says_where_it_wrote_nothing(run, tmp_path, capsys):
    with read_only(tmp_path / "ro", source=run) as frozen:
        assert evaluate_main(["--run", str(frozen)]) == 0
        captured = capsys.readouterr()
        assert "test accuracy of the exported model:" in captured.out and "on 300 clips" in captured.out
        assert "the confusion matrix was not written" in captured.err and "--confusion FILE" in captured.err
        elsewhere = tmp_path / "cm.csv"
        assert evaluate_main(["--run", str(frozen), "--confusion", str(elsewhere)]) == 0
        assert pd.read_csv(elsewhere, index_col=0).values.sum() == 300
    assert evaluate_main(["--run", str(run), "--confusion", str(run / "summary.json")]) == 2  # before scoring
    one_line_error(capsys.readouterr().err, "would overwrite summary.json")


# --- bug 9, W8, W9: damaged, foreign and broken exported models ----------------------------------------------------
def _variant(run: Path, folder: Path, change) -> Path:
    payload = torch.load(run / "exported.pt", weights_only=True)
    folder.mkdir()
    torch.save(change(payload), folder / "exported.pt")
    return folder


@pytest.mark.parametrize("name, change, message", [
    ("list", lambda p: [1, 2, 3], "a PyTorch file holding a list, not a strrnn exported model"),
    ("no_weights", lambda p: {k: v for k, v in p.items() if k != "state_dict"}, "incomplete exported model"),
    ("wider", lambda p: {**p, "config": {**p["config"], "hidden_size": 32}}, "do not fit the model"),
    ("nan", lambda p: {**p, "state_dict": {k: v * float("nan") if v.is_floating_point() else v
                                           for k, v in p["state_dict"].items()}}, "NaN or infinite weights"),
])
def test_a_damaged_exported_model_is_one_line_in_every_tool(run, tmp_path, capsys, name, change, message):
    folder = _variant(run, tmp_path / name, change)
    for main, argv in ((evaluate_main, ["--run", str(folder)]),
                       (export_main, ["--run", str(folder), "--onnx", str(tmp_path / "m.onnx")]),
                       (predict_main, [str(folder), str(CLIP)])):
        assert main(argv) == 2, (main, name)
        one_line_error(capsys.readouterr().err, message)
    assert not (tmp_path / "m.onnx").exists()


def test_an_older_config_without_num_layers_loads_as_the_one_layer_it_was(run, tmp_path):
    def older(payload):
        return {**payload, "config": {k: v for k, v in payload["config"].items() if k != "num_layers"}}

    folder = _variant(run, tmp_path / "older", older)
    np.testing.assert_allclose(strrnn.load(folder, device="cpu").predict_proba([CLIP]),
                               strrnn.load(run, device="cpu").predict_proba([CLIP]), atol=1e-6)


def test_an_onnx_file_or_a_training_checkpoint_given_as_the_run_is_named_as_such(run, tmp_path, capsys):
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"\x08\x07\x12\x07pytorch")
    for path, message in ((onnx, "is an ONNX file"), (run / "best.ckpt", "is a training checkpoint")):
        assert predict_main([str(path), str(CLIP)]) == 2
        err = capsys.readouterr().err
        one_line_error(err, message)
        assert "train again" not in err and "format None" not in err


# --- bug 10, W13-W15: compare over damaged and edited runs ---------------------------------------------------------
def _copy(run: Path, folder: Path, seed: int | None = None) -> Path:
    shutil.copytree(run, folder)
    if seed is not None:  # another seed of the same configuration
        summary = json.loads((folder / "summary.json").read_text())
        (folder / "summary.json").write_text(json.dumps({**summary, "seed": seed, "test_acc": 0.25}))
        config = yaml.safe_load((folder / "config.yaml").read_text())
        (folder / "config.yaml").write_text(yaml.safe_dump({**config, "seed": seed}))
    return folder


@pytest.mark.parametrize("file, text, message", [
    ("config.yaml", "dataset: fsdd\n  mode: [oops\n", "config.yaml: not a readable run configuration"),
    ("summary.json", "[1, 2]", "summary.json: expected a JSON object of run results, found a list"),
    ("summary.json", '{"dataset": "fsdd", "te', "summary.json: not valid JSON"),
])
def test_compare_names_the_broken_file_in_one_line(run, tmp_path, capsys, file, text, message):
    broken = _copy(run, tmp_path / "broken")
    (broken / file).write_text(text)
    assert compare.main([str(run), str(broken), "--csv", str(tmp_path / "c.csv"), "--plot",
                         str(tmp_path / "p.png")]) == 2
    one_line_error(capsys.readouterr().err, message, str(broken))
    assert not (tmp_path / "c.csv").exists()


def test_compare_groups_by_what_the_run_recorded_after_a_config_edit(run, tmp_path):
    edited = _copy(run, tmp_path / "edited", seed=1)
    config = yaml.safe_load((edited / "config.yaml").read_text())
    (edited / "config.yaml").write_text(yaml.safe_dump({**config, "cell": "lstm"}))
    with pytest.warns(UserWarning, match="config.yaml says cell=lstm but summary.json cell=fastgrnn"):
        table = compare.compare([run, edited])
    assert len(table) == 1 and table.iloc[0]["seeds"] == 2 and table.iloc[0]["cell"] == "fastgrnn"
    assert compare.differences(table) == []


def test_a_run_without_config_yaml_joins_its_identical_runs(run, tmp_path):
    older = _copy(run, tmp_path / "older", seed=2)
    (older / "config.yaml").unlink()
    table = compare.compare([run, older])
    assert len(table) == 1 and table.iloc[0]["seeds"] == 2
    other = _copy(run, tmp_path / "other", seed=3)
    summary = json.loads((other / "summary.json").read_text())
    (other / "summary.json").write_text(json.dumps({**summary, "hidden_size": 64}))
    (other / "config.yaml").unlink()
    assert len(compare.compare([run, other])) == 2  # a different model stays apart


# --- W10-W12: evaluate and export -----------------------------------------------------------------------------------
def test_export_refuses_a_non_finite_atol_before_importing_anything():
    result = subprocess.run([sys.executable, "-m", "strrnn", "export", "--run", "nowhere", "--onnx", "m.onnx",
                             "--atol", "nan"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 2
    one_line_error(result.stderr, "--atol must be a finite number >= 0, got nan")


def test_evaluate_scores_a_folder_holding_some_of_the_classes(run, tmp_path):
    from strrnn.cli.evaluate import evaluate

    recordings = tmp_path / "digits01" / "recordings"
    recordings.mkdir(parents=True)
    for clip in sorted(FSDD.glob("recordings/[01]_*_[0-4].wav")):  # two digits, test takes only
        (recordings / clip.name).symlink_to(clip)
    accuracy, confusion = evaluate(run, data_dir=str(recordings.parent))
    assert confusion.values.sum() == 60 and confusion.loc[["zero", "one"]].values.sum() == 60
    assert accuracy == pytest.approx(np.trace(confusion.values) / 60)


@pytest.fixture(scope="module")
def testset_run(tmp_path_factory):
    """A google12 run folder whose training data was a Speech Commands test-set layout folder (generated)."""
    from conftest_data import tone, write_wav

    from strrnn import artifacts
    from strrnn.data.speech_commands import GOOGLE12_WORDS

    base = tmp_path_factory.mktemp("testset")
    root = base / "speech_commands_test_set"
    for k, folder in enumerate((*GOOGLE12_WORDS, "_unknown_", "_silence_")):
        for i in range(3):
            prefix = "bed_" if folder == "_unknown_" else ""
            name = f"{i}.wav" if folder == "_silence_" else f"{prefix}{i:08x}_nohash_0.wav"
            write_wav(root / folder / name, tone(200 + 150 * k, seconds=1.0, seed=i))
    config = vars(train.build_parser().parse_args([]))
    config.update(dataset="google12", data_dir=str(root), mode="dense", hidden_size=8, pooling="mean")

    class Shape:
        input_shape, num_features, num_classes = (99, 32), 32, 12
        class_names = ["_silence_", "_unknown_", *GOOGLE12_WORDS]
        normalization = {"mean": [0.0] * 32, "std": [1.0] * 32}

    torch.manual_seed(0)
    out = base / "run"
    out.mkdir()
    model = artifacts.export_model(artifacts.build_model(config, Shape()))
    artifacts.save_exported(out / "exported.pt", model, config, {}, Shape())
    return out, root


def test_all_clips_of_the_training_folder_is_not_reported_as_a_test_accuracy(testset_run, tmp_path, capsys):
    from strrnn.cli.evaluate import evaluate

    run, root = testset_run
    _, confusion = evaluate(run, all_clips=True)
    assert confusion.attrs["includes_training_clips"] and confusion.values.sum() == 36
    assert evaluate_main(["--run", str(run), "--all-clips", "--confusion", str(tmp_path / "cm.csv")]) == 0
    out = capsys.readouterr().out
    assert "includes its training clips, so it is not a test accuracy" in out and "test accuracy of" not in out
    other = tmp_path / "copy"
    shutil.copytree(root, other, ignore=shutil.ignore_patterns(".cache"))
    _, confusion = evaluate(run, data_dir=str(other))  # another folder: every clip is a test clip
    assert not confusion.attrs["includes_training_clips"] and confusion.values.sum() == 36


# --- bug 1, W1-W7: predict ------------------------------------------------------------------------------------------
def test_a_batch_size_that_scores_nothing_is_refused(run):
    for batch_size in (-1, 0, True, 2.5):
        with pytest.raises(InputError, match="batch_size must be a positive integer"):
            strrnn.load(run, device="cpu", batch_size=batch_size)
    predictor = strrnn.load(run, device="cpu", batch_size=1)
    with pytest.raises(InputError, match="batch_size"):
        predictor.batch_size = -1
    with pytest.raises(InputError, match="nonexistent.wav: no such file"):
        predictor.predict([CLIP, "/nonexistent.wav"])  # never labels for inputs it did not read
    assert len(predictor.predict([CLIP, CLIP, CLIP])) == 3


def test_an_unusable_device_is_named_not_blamed_on_the_run(run, capsys):
    with pytest.raises(ValueError, match="unknown device 'bogus'"):
        strrnn.load(run, device="bogus")
    assert predict_main([str(run), str(CLIP), "--device", "bogus"]) == 2
    err = capsys.readouterr().err
    one_line_error(err, "unknown device 'bogus'")
    assert "damaged" not in err and "exported.pt" not in err
    if not torch.cuda.is_available():
        assert predict_main([str(run), str(CLIP), "--device", "cuda"]) == 2
        one_line_error(capsys.readouterr().err, "device 'cuda': no CUDA device is usable", "use 'cpu'")


def test_inputs_scored_but_not_as_meant_are_warned_about(run, tmp_path, capsys):
    y, rate = sf.read(CLIP, dtype="float32")
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(CLIP.read_bytes()[:200])
    long = tmp_path / "long.wav"
    sf.write(long, np.tile(y, 30), rate)
    predictor = strrnn.load(run, device="cpu")
    cases = [(truncated, "truncated.wav: truncated file: its header announces"),
             (long, "only its last 1.00 s were scored"),
             (300 * y, "waveform 0: samples reach"),
             (CLIP, None)]
    for item, message in cases:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            predictor.predict([item], sample_rate=rate)
        texts = [str(w.message) for w in caught if issubclass(w.category, InputWarning)]
        assert (texts == []) if message is None else (len(texts) == 1 and message in texts[0]), (item, texts)
    assert predict_main([str(run), str(truncated), str(long), "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 2
    warned = captured.err.splitlines()
    assert len(warned) == 2 and all(line.startswith("strrnn predict: warning: ") for line in warned)


def test_library_inputs_raise_input_error_not_type_or_value_errors(run, tmp_path):
    predictor = strrnn.load(run, device="cpu")
    y, rate = sf.read(CLIP, dtype="float32")
    np.testing.assert_allclose(predictor.predict_proba([torch.from_numpy(y).to(torch.bfloat16)], sample_rate=rate),
                               predictor.predict_proba([y], sample_rate=rate), atol=0.05)
    for rate_given in (float("nan"), "16k", 0, -8000, 8000.5):
        with pytest.raises(InputError, match="sample_rate must be positive"):
            predictor.predict([y], sample_rate=rate_given)
    noise = tmp_path / "noise.mp3"
    noise.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(InputError, match=r"noise.mp3: not a readable audio file \(unknown or damaged") as info:
        predictor.predict([noise])
    assert "possibly a pipe" not in str(info.value)


def test_proba_table_escapes_tabs_and_newlines_in_file_names(run, tmp_path, capsys):
    odd = tmp_path / "a\tb\nc.wav"
    shutil.copy(CLIP, odd)
    assert predict_main([str(run), str(odd), str(CLIP), "--proba", "--device", "cpu"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert len(rows) == 3 and len({len(row.split("\t")) for row in rows}) == 1
    assert rows[1].split("\t")[0] == str(odd).replace("\t", "\\t").replace("\n", "\\n")
