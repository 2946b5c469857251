"""Model size (strrnn.model_size, the report's KB columns, summary.json) and strrnn export's ONNX export
from the stored input shape, with onnxruntime's int8 quantization: no data set needed, clear errors."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import strrnn
from strrnn import artifacts as runs
from strrnn.cli.export import main as export_main
from strrnn.deploy.onnx_graph import export_onnx, int8_path

ONNX_MODULES = ("onnx", "onnxruntime", "onnxscript")
needs_onnx = pytest.mark.skipif(not all(importlib.util.find_spec(m) for m in ONNX_MODULES),
                                reason="ONNX export needs onnx, onnxruntime and onnxscript")
FSDD = Path(__file__).resolve().parents[2] / "shared" / "data" / "fsdd"
needs_fsdd = pytest.mark.skipif(not (FSDD / "recordings").is_dir(), reason=f"FSDD not found at {FSDD}")

SHAPE = (12, 8)  # frames x features of the tiny run
CLASSES = ["a", "b", "c"]


# --- sizes ------------------------------------------------------------------------------------------------------


def test_model_size_counts_bytes_exactly():
    shared = nn.Linear(4, 4)
    model = nn.Sequential(nn.Linear(8, 4), nn.BatchNorm1d(4), shared, shared, nn.Linear(4, 3))
    # fp32: every float element at 4 bytes; BatchNorm's int64 counter and the repeated layer are not counted
    floats = (32 + 4) + 4 * 4 + (16 + 4) + (12 + 3)
    matrices = 32 + 16 + 12
    assert strrnn.model_size(model) == {
        "fp32_kb": 4 * floats / 1024,
        "int8_kb": (matrices + 3 * 5 + 4 * (floats - matrices)) / 1024,
    }
    assert strrnn.model_size(nn.Linear(100, 10)) == {"fp32_kb": 4040 / 1024, "int8_kb": 1045 / 1024}


def test_model_size_of_factors_matches_the_report_and_refuses_str_models():
    lin = nn.Linear(40, 30, bias=False)
    strrnn.lowrank(lin, max_rank=5, threshold=False)  # fixed rank 5: stored as 30x5 and 5x40 factors
    with pytest.raises(ValueError, match="strrnn.export"):
        strrnn.model_size(lin)
    size = strrnn.model_size(strrnn.export(lin))
    assert size == {"fp32_kb": 4 * 5 * 70 / 1024, "int8_kb": (5 * 70 + 2 * 5) / 1024}
    row = strrnn.report(lin).iloc[0]
    assert (row["fp32_kb"], row["int8_kb"]) == (size["fp32_kb"], size["int8_kb"])


def test_report_counts_unstructured_zeros_as_stored():
    lin = nn.Linear(10, 10, bias=False)
    strrnn.unstructured(lin)
    table = strrnn.report(lin)
    assert table.iloc[0]["fp32_kb"] == 400 / 1024 and table.iloc[0]["int8_kb"] == 105 / 1024
    assert table.iloc[-1]["module"] == "total" and table.iloc[-1]["int8_kb"] == 105 / 1024


# --- a tiny trained run whose data set is gone ---------------------------------------------------------------------


class _Shape:
    """What save_exported and build_model read from a data module."""

    input_shape, num_features, class_names, normalization = SHAPE, SHAPE[1], CLASSES, None
    num_classes = len(CLASSES)


def _batch(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    # class c raises the features f with f % 3 == c: learnable in a few steps
    y = torch.randint(0, len(CLASSES), (n,), generator=generator)
    x = torch.randn(n, *SHAPE, generator=generator)
    x += 1.5 * (torch.arange(SHAPE[1]) % 3 == y[:, None, None]).float()
    return x, y


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, one_thread):
    """A fixed-rank FastGRNN run folder, trained on generated sequences, whose --data-dir no longer exists."""
    from strrnn.cli.train import build_parser
    from strrnn.modes import get_mode

    base = tmp_path_factory.mktemp("int8")
    config = vars(build_parser().parse_args([]))
    config.update(dataset="fsdd", data_dir=str(base / "gone"), mode="fixed-rank", rank_w=3, rank_u=4,
                  hidden_size=16, cell="fastgrnn", factors="orthogonal")
    torch.manual_seed(0)
    model = runs.build_model(config, _Shape())
    get_mode("fixed-rank").apply(model, config)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(80):
        x, y = _batch(32, generator)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    x, y = _batch(200, generator)
    with torch.no_grad():
        assert (model(x).argmax(1) == y).float().mean() > 0.9  # trained, so that agreement means something
    out = base / "run"
    out.mkdir()
    runs.save_exported(out / "exported.pt", runs.export_model(model), config, runs.learned_ranks(model), _Shape())
    return out


@needs_onnx
def test_export_needs_no_data_and_int8_agrees_with_fp32(tiny_run, tmp_path, capsys):
    import onnx
    import onnxruntime

    assert not (tiny_run.parent / "gone").exists()
    onnx_file = tmp_path / "m.onnx"
    assert export_main(["--run", str(tiny_run), "--onnx", str(onnx_file), "--int8"]) == 0
    out = capsys.readouterr().out
    assert "onnxruntime matches PyTorch" in out and "12x8" in out and "KB at int8" in out
    q_file = int8_path(onnx_file)
    assert q_file.name == "m.int8.onnx" and q_file.is_file()
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically: no temporary file left

    model, _ = runs.load_exported(tiny_run)
    x, y = _batch(300, torch.Generator().manual_seed(1))
    fp32 = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    int8 = onnxruntime.InferenceSession(str(q_file), providers=["CPUExecutionProvider"])
    for batch in (1, 7, 300):  # the batch axis is dynamic
        got = fp32.run(None, {"features": x[:batch].numpy()})[0]
        with torch.no_grad():
            assert got == pytest.approx(model(x[:batch]).numpy(), abs=1e-4)
    top_fp32 = fp32.run(None, {"features": x.numpy()})[0].argmax(1)
    top_int8 = int8.run(None, {"features": x.numpy()})[0].argmax(1)
    assert (top_int8 == top_fp32).mean() >= 0.9
    assert (top_int8 == y.numpy()).mean() >= 0.85
    # every weight matrix is stored as int8, once (the frames are a Scan, not an unrolled loop); the step graphs beside
    # them hold the same weights. (This model has 248 weights: its files are mostly graph, 2.5 KB either way; the
    # int8-smaller and low-rank-smaller relations are tested on full-size models in test_onnx_graph.py.)
    matrices = [t for t in onnx.load(str(q_file)).graph.initializer if len(t.dims) == 2]
    assert matrices and {t.data_type for t in matrices} == {onnx.TensorProto.INT8}
    assert q_file.stat().st_size < 1.1 * onnx_file.stat().st_size < 3 * 1024
    assert {p.name for p in tmp_path.iterdir()} == {"m.onnx", "m.step.onnx", "m.int8.onnx", "m.int8.step.onnx"}
    assert "m.step.onnx" in out and "m.int8.step.onnx" in out


@needs_onnx
def test_export_onnx_reports_sizes_and_refuses_to_overwrite_fp32_with_int8(tiny_run, tmp_path):
    onnx_file = tmp_path / "m.onnx"
    with pytest.raises(ValueError, match="fp32 --onnx file"):
        export_onnx(tiny_run, onnx_file, int8=onnx_file)
    result = export_onnx(tiny_run, onnx_file)
    assert result.int8 is None and result.input_shape == SHAPE and result.max_abs_diff < 1e-4
    assert result.size == strrnn.model_size(runs.load_exported(tiny_run)[0])


def _one_line_error(capsys, *needles):
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err


def test_cli_errors_are_one_line(tiny_run, tmp_path, capsys, monkeypatch):
    onnx_file = str(tmp_path / "m.onnx")
    assert export_main(["--run", str(tmp_path / "missing"), "--onnx", onnx_file]) == 2
    _one_line_error(capsys, "missing", "not found")
    (tmp_path / "empty").mkdir()
    assert export_main(["--run", str(tmp_path / "empty"), "--onnx", onnx_file]) == 2
    _one_line_error(capsys, "exported.pt")
    assert export_main(["--run", str(tiny_run), "--onnx", str(tmp_path)]) == 2
    _one_line_error(capsys, "is a folder")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    assert export_main(["--run", str(tiny_run), "--onnx", onnx_file]) == 2
    _one_line_error(capsys, "onnx")
    assert not (tmp_path / "m.onnx").exists()


@needs_onnx
def test_check_accuracy_without_the_data_set_is_a_clear_error(tiny_run, tmp_path, capsys):
    onnx_file = tmp_path / "m.onnx"
    assert export_main(["--run", str(tiny_run), "--onnx", str(onnx_file), "--check-accuracy"]) == 2
    captured = capsys.readouterr()
    assert "wrote" in captured.out and onnx_file.is_file()  # the export itself needed no data
    assert "--check-accuracy" in captured.err and "Traceback" not in captured.err


# --- a real training run: summary.json and report carry the sizes; accuracies of both ONNX models ----------------


@needs_fsdd
def test_training_run_records_sizes_and_int8_accuracy(tmp_path, capsys):
    from strrnn.cli import train

    out = tmp_path / "run"
    assert train.main(["--dataset", "fsdd", "--data-dir", str(FSDD), "--epochs", "1", "--limit-batches", "3",
                       "--batch-size", "50", "--no-progress-bar", "--hidden-size", "16", "--mode", "lowrank",
                       "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    size = strrnn.model_size(runs.load_exported(out)[0])
    assert (summary["size_fp32_kb"], summary["size_int8_kb"]) == (size["fp32_kb"], size["int8_kb"])
    assert summary["size_int8_kb"] < summary["size_fp32_kb"] == 4 * summary["params_exported"] / 1024
    assert f"{size['int8_kb']:.2f} KB at int8" in (out / "report.md").read_text()
    assert "exported model size" in capsys.readouterr().out
    if not all(importlib.util.find_spec(m) for m in ONNX_MODULES):
        return
    onnx_file = tmp_path / "m.onnx"
    assert export_main(["--run", str(out), "--onnx", str(onnx_file), "--int8", "--check-accuracy"]) == 0
    line = [t for t in capsys.readouterr().out.splitlines() if t.startswith("test accuracy")][0]
    accuracy = dict(part.split() for part in line.split(": ", 1)[1].split(", "))
    from strrnn.cli.evaluate import evaluate

    # PyTorch on the whole test split (summary.json's test_acc saw --limit-batches of it)
    assert float(accuracy["fp32"]) == pytest.approx(evaluate(out)[0], abs=0.01)
    assert 0.0 <= float(accuracy["int8"]) <= 1.0
