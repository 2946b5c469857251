"""strrnn export --c: a run folder to C99 that the printed command builds, checked against PyTorch with the system
compiler (skipped, with a note, without one), with its flash, RAM and multiply-adds; --onnx and --c together; one-line
errors for a run without an exported model, an unsupported model, an unwritable folder and an int8 overflow."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from strrnn import artifacts as runs
from strrnn.cli.export import main as export_main
from strrnn.deploy import export_c

CC = shutil.which("cc")
needs_cc = pytest.mark.skipif(CC is None, reason="no C compiler: `cc` is not on PATH")
SHAPE = (12, 8)
NORM = {"mean": np.linspace(-6, -1, 8).tolist(), "std": np.linspace(1, 2, 8).tolist()}


def _run(folder: Path, *, shape=SHAPE, module=None, dataset="fsdd", normalization=NORM, **config_updates) -> Path:
    """A run folder holding ``exported.pt`` of a freshly built model (random weights: exactness needs no training)."""
    from strrnn.cli.train import build_parser

    class Shape:
        input_shape, num_features, class_names, normalization = shape, shape[-1], ["a", "b", "c"], None
        num_classes = 3

    Shape.normalization = normalization
    config = vars(build_parser().parse_args([]))
    config.update(dataset=dataset, data_dir=str(folder / "gone"), mode="fixed-rank", rank_w=3, rank_u=4,
                  hidden_size=16, cell="gru", factors="free", pooling="mean")
    config.update(config_updates)
    torch.manual_seed(0)
    model = module if module is not None else runs.build_model(config, Shape())
    if config["mode"] == "fixed-rank":
        from strrnn.modes import get_mode

        get_mode("fixed-rank").apply(model, config)
    folder.mkdir(parents=True)
    runs.save_exported(folder / "exported.pt", runs.export_model(model), config, runs.learned_ranks(model), Shape())
    return folder


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("c-cli") / "run")


def _raw_clips(n=4, seed=1):
    x = torch.randn(n, *SHAPE, generator=torch.Generator().manual_seed(seed))
    raw = x.numpy() * np.asarray(NORM["std"], np.float32) + np.asarray(NORM["mean"], np.float32)
    return x, raw.astype(np.float32)


@needs_cc
def test_export_c_prints_sizes_and_a_build_command_that_works(run, tmp_path, capsys, one_thread):
    out = tmp_path / "c"
    assert export_main(["--run", str(run), "--c", str(out)]) == 0
    text = capsys.readouterr().out
    assert "wrote" in text and "kws_model.h" in text and "(fp32; 12 frames x 8 raw features -> 3 classes)" in text
    assert "the C logits match PyTorch's to" in text and "on 16 random clips; same top class on 100%" in text
    # GRU hidden 16, W rank 3 (8 in), U rank 4 (16 in): 3 (48 + 8) + 4 (48 + 16) multiply-adds
    assert "424 multiply-adds per frame (+ 48 per kws_logits call)" in text
    assert "flash" in text and "RAM" in text
    build = next(line for line in text.splitlines() if line.startswith("build: ")).removeprefix("build: ")
    command = build.split("   (")[0]
    assert command == f"cc -std=c99 -O2 {out}/*.c -lm -o kws"
    subprocess.run(command, shell=True, cwd=tmp_path, check=True)  # the printed command, as a user would run it
    x, raw = _raw_clips()
    done = subprocess.run([str(tmp_path / "kws")], input=raw.astype("<f4").tobytes(), capture_output=True, check=True)
    got = np.array(done.stdout.split(), dtype=np.float64).reshape(4, 3)
    model, _ = runs.load_exported(run)
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), atol=1e-4, rtol=0)
    assert sorted(p.name for p in out.iterdir()) == ["kws_model.c", "kws_model.h", "main.c"]  # no binary left there


@needs_cc
def test_export_c_int8_with_prefix_and_onnx_together(run, tmp_path, capsys, one_thread):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "c"
    argv = ["--run", str(run), "--c", str(out), "--int8", "--scales", "tensor", "--prefix", "spot",
            "--onnx", str(tmp_path / "m.onnx")]
    assert export_main(argv) == 0
    text = capsys.readouterr().out
    assert "(int8, tensor scales;" in text and "the int8 C logits lie within" in text
    assert "per spot_logits call" in text and text.count("wrote ") == 5  # C files, fp32 and int8 clip and step
    assert {p.name for p in tmp_path.glob("*.onnx")} == {"m.onnx", "m.step.onnx", "m.int8.onnx", "m.int8.step.onnx"}
    source = (out / "spot_model.c").read_text()
    assert "static const int8_t" in source and "qmv(" in source and "void spot_step(" in source


def test_export_c_without_a_compiler_writes_and_says_it_did_not_check(run, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CC", "no-such-compiler-strrnn")
    assert export_main(["--run", str(run), "--c", str(tmp_path / "c")]) == 0
    text = capsys.readouterr().out
    assert "not checked against PyTorch: no C compiler" in text
    assert "flash" in text and "const arrays only" in text
    assert (tmp_path / "c" / "kws_model.c").is_file()
    result = export_c(run, tmp_path / "c2", cc="no-such-compiler-strrnn")
    assert not result.checked and result.max_rel_diff is None and result.footprint["macs_per_frame"] == 424


def _one_line_error(capsys, argv, *needles):
    assert export_main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err


def test_bad_input_gets_one_line_errors(run, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    _one_line_error(capsys, ["--run", str(empty), "--c", str(tmp_path / "c")], "exported.pt", "not found")
    _one_line_error(capsys, ["--run", str(run), "--c", "/proc/strrnn-c-export"], "cannot write the C files")
    blocker = tmp_path / "file"
    blocker.write_text("keep")
    _one_line_error(capsys, ["--run", str(run), "--c", str(blocker)], "is a file, not a folder")
    # a CNN run: not a recurrent keyword spotter
    from cnn.models import build as build_cnn

    cnn = _run(tmp_path / "cnn", shape=(1, 8, 8), module=build_cnn("small_cnn", num_classes=3, in_chans=1),
               dataset="digits", normalization=None, mode="dense", model="small_cnn")
    _one_line_error(capsys, ["--run", str(cnn), "--c", str(tmp_path / "c")], "the C export does not support the model",
                    "fastgrnn, fastrnn, lstm, gru")
    # a product too wide for an int32 accumulator: 133,145 inputs x 127 x 127 > 2^31 - 1
    wide = _run(tmp_path / "wide", shape=(2, 133_145), normalization=None, mode="dense", cell="fastrnn",
                hidden_size=1, pooling="last")
    _one_line_error(capsys, ["--run", str(wide), "--c", str(tmp_path / "w"), "--int8"], "int8 export refused",
                    "133145*127*127")
    assert not (tmp_path / "w").exists() or not any((tmp_path / "w").iterdir())


def test_onnx_or_c_is_required(run, capsys):
    with pytest.raises(SystemExit) as info:
        export_main(["--run", str(run)])
    assert info.value.code == 2 and "give --onnx FILE, --c FOLDER, or both" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        export_main(["--run", str(run), "--c", "x", "--int8", "q.onnx"])
    assert "names the int8 ONNX file" in capsys.readouterr().err
