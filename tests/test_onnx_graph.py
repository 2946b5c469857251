"""Hand-built ONNX graphs of recurrent models (strrnn.deploy.onnx_graph): the clip graph (a Scan) and the step graph
compute PyTorch's logits for every cell, dense and low rank, both poolings, one and two layers; the step graph looped
over a clip frame by frame equals the PyTorch logits after every frame; each weight is stored once, so an int8 file
is smaller than its fp32 file and a low-rank file smaller than the dense one (LSTM and GRU included: factors, not
their product); a product that could overflow int32 is refused."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_nets import random_spotter

import strrnn
from strrnn.deploy.c_source import _describe
from strrnn.deploy.onnx_graph import build_graphs, run_step_graph, state_layout
from strrnn.models import KeywordSpotter

pytestmark = pytest.mark.skipif(not all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime")),
                                reason="the ONNX graphs need onnx and onnxruntime")
FSDD = Path(__file__).resolve().parents[2] / "shared" / "data" / "fsdd"
ATOL = 1e-4


_model = random_spotter


def _sessions(model, shape, int8=False, per_row=True):
    import onnxruntime

    clip, step = build_graphs(_describe(model, shape, None, None), int8=int8, per_row=per_row)
    return tuple(onnxruntime.InferenceSession(g.SerializeToString(), providers=["CPUExecutionProvider"])
                 for g in (clip, step))


@pytest.fixture(scope="module")
def clips():
    """Eight normalized feature clips (8, 99, 32): FSDD test clips where the data is here, else standard normal."""
    if (FSDD / "recordings").is_dir():
        dm = strrnn.data.get("fsdd", FSDD, progress=False)
        dm.setup("test")
        x = torch.stack([dm.test_set[i][0] for i in range(0, 300, 38)])
        return x.float()
    return torch.randn(8, 99, 32, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("layers,pooling", [(1, "last"), (2, "mean")])
@pytest.mark.parametrize("lowrank", [False, True], ids=["dense", "lowrank"])
@pytest.mark.parametrize("cell", ["fastgrnn", "fastrnn", "lstm", "gru"])
def test_clip_and_looped_step_graphs_compute_pytorchs_logits(cell, lowrank, layers, pooling, clips, one_thread):
    model = _model(cell, lowrank, pooling, layers)
    clip, step = _sessions(model, (99, 32))
    x = clips
    with torch.no_grad():
        ref = model(x).numpy()
        state, per_frame = None, []
        for t in range(x.shape[1]):
            logits, state = model.step(x[:, t], state)
            per_frame.append(logits.numpy())
    per_frame = np.stack(per_frame, axis=1)  # (8, 99, 10): PyTorch's logits after every frame
    np.testing.assert_allclose(clip.run(None, {"features": x.numpy()})[0], ref, atol=ATOL, rtol=0)
    stepped, final = run_step_graph(step, x.numpy())
    assert stepped.shape == per_frame.shape == (8, 99, 10)
    np.testing.assert_allclose(stepped, per_frame, atol=ATOL, rtol=0)
    assert final.shape == (8, state_layout(_describe(model, (99, 32), None, None))["size"][1])
    # the time axis is dynamic: a clip of 40 frames is the first 40 steps
    np.testing.assert_allclose(clip.run(None, {"features": x[:, :40].numpy()})[0], per_frame[:, 39], atol=ATOL, rtol=0)


def test_state_rows_are_independent_sequences_and_zeros_restart_one(one_thread):
    """Rows of the state are separate sequences: a row reset to zeros mid-way starts a new clip (sliding windows)."""
    model = _model("lstm", True, "mean", 2)
    _, step = _sessions(model, (99, 32))
    x = torch.randn(2, 30, 32, generator=torch.Generator().manual_seed(1)).numpy()
    _, state = run_step_graph(step, x[:, :10])
    state[1] = 0.0  # row 1 restarts at frame 10
    logits, _ = run_step_graph(step, x[:, 10:], state)
    with torch.no_grad():
        whole = model(torch.from_numpy(x[:1])).numpy()
        tail = model(torch.from_numpy(x[1:, 10:])).numpy()
    np.testing.assert_allclose(logits[0, -1], whole[0], atol=ATOL, rtol=0)
    np.testing.assert_allclose(logits[1, -1], tail[0], atol=ATOL, rtol=0)


def test_state_layout():
    spec = _describe(_model("lstm", False, "mean", 2, hidden=6), (99, 32), None, None)
    assert state_layout(spec) == {"h0": (0, 6), "h1": (6, 12), "c0": (12, 18), "c1": (18, 24), "sum": (24, 30),
                                  "count": (30, 31), "size": (0, 31)}
    assert state_layout(_describe(_model("gru", False, hidden=6), (99, 32), None, None)) == {"h0": (0, 6),
                                                                                             "size": (0, 6)}


# --- int8 ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scales", ["row", "tensor"])
@pytest.mark.parametrize("cell,lowrank", [("fastgrnn", True), ("lstm", False), ("gru", True), ("fastrnn", False)])
def test_int8_graphs_stay_close_to_fp32(cell, lowrank, scales, clips, one_thread):
    import onnx

    model = _model(cell, lowrank, "mean", 2, hidden=24)
    fp32, _ = _sessions(model, (99, 32))
    int8, int8_step = _sessions(model, (99, 32), int8=True, per_row=scales == "row")
    x = clips.numpy()
    ref = fp32.run(None, {"features": x})[0]
    got = int8.run(None, {"features": x})[0]
    spread = np.abs(ref).max()
    # measured (largest error / largest logit): 0.3-1.3%; a wrong scale or a saturated sum is off by 20-100%
    assert np.abs(got - ref).max() <= 0.06 * spread
    assert not np.allclose(got, ref, rtol=0, atol=1e-6)  # really another arithmetic
    np.testing.assert_allclose(run_step_graph(int8_step, x)[0][:, -1], got, atol=1e-5, rtol=0)
    clip, _ = build_graphs(_describe(model, (99, 32), None, None), int8=True, per_row=scales == "row")
    matrices = [t for t in clip.graph.initializer if len(t.dims) == 2]
    assert matrices and {t.data_type for t in matrices} == {onnx.TensorProto.INT8}
    assert "QMatMul" in _body_ops(clip) and "MatMul" not in _body_ops(clip)  # every product of the step
    (function,) = clip.functions  # defined once: int8 x int8 -> int32
    assert [n.op_type for n in function.node if "MatMul" in n.op_type] == ["MatMulInteger"]


def _body_ops(model) -> set[str]:
    scan = next(n for n in model.graph.node if n.op_type == "Scan")
    body = next(a.g for a in scan.attribute if a.name == "body")
    return {n.op_type for n in body.node}


def test_int8_refuses_a_product_that_could_overflow_int32():
    n = (2**31 - 1) // (127 * 127) + 1  # 133,145 inputs: n * 127 * 127 no longer fits in int32
    torch.manual_seed(0)
    model = strrnn.export(KeywordSpotter(n_features=n, n_classes=2, cell="fastrnn", hidden_size=1)).eval()
    with pytest.raises(ValueError, match=r"int8 ONNX export refused: the product L0_W 1x133145") as info:
        build_graphs(_describe(model, (2, n), None, None), int8=True)
    assert "\n" not in str(info.value)
    one_less = strrnn.export(KeywordSpotter(n_features=n - 1, n_classes=2, cell="fastrnn", hidden_size=1)).eval()
    build_graphs(_describe(one_less, (2, n - 1), None, None), int8=True)


# --- sizes: each weight stored once --------------------------------------------------------------------------------


def _file_bytes(model, int8: bool = False) -> dict[str, int]:
    clip, step = build_graphs(_describe(model, (99, 32), None, None), int8=int8)
    return {"clip": len(clip.SerializeToString()), "step": len(step.SerializeToString())}


@pytest.mark.parametrize("cell,ranks", [("fastgrnn", (13, 23)), ("lstm", (9, 12)), ("gru", (9, 12))])
def test_files_shrink_with_low_rank_and_with_int8(cell, ranks):
    """FastGRNN hidden 100 on 99 x 32 (the FSDD model; ranks STR learns at 50% of W,U) and LSTM/GRU hidden 100: the
    file is the weights plus a graph of a few KB, so it follows the weights' bytes.

    Measured (clip graph, bytes, fp32 / int8): FastGRNN dense 58,990 / 17,757, low rank 31,564 / 11,218; LSTM
    218,503 / 60,872 and 46,965 / 18,244; GRU 166,471 / 47,640 and 39,331 / 16,111 -- int8/fp32 0.28-0.41,
    low rank/dense 0.22-0.63.
    """
    dense = _model(cell, False, hidden=100)
    lowrank = _model(cell, True, hidden=100, ranks=ranks)
    sizes = {(name, q): _file_bytes(m, q) for name, m in (("dense", dense), ("lowrank", lowrank))
             for q in (False, True)}
    for (name, int8), size in sizes.items():
        model = dense if name == "dense" else lowrank
        weights = strrnn.model_size(model)["int8_kb" if int8 else "fp32_kb"] * 1024
        # the graph adds 1-3 KB (int8: + one fp32 scale per output row of every product, up to 1,200 here); an
        # LSTM's two bias vectors are stored as their sum, so the file may hold less than model_size counts
        assert 0.9 * weights < size["clip"] < weights + 3 * 1024 + (4 * 1200 if int8 else 0), (name, int8, size)
        assert size["step"] < size["clip"]  # the same weights, no Scan around them
    for name in ("dense", "lowrank"):
        assert sizes[name, True]["clip"] < 0.45 * sizes[name, False]["clip"]
        assert sizes[name, True]["step"] < 0.45 * sizes[name, False]["step"]
    for int8 in (False, True):
        assert sizes["lowrank", int8]["clip"] < 0.7 * sizes["dense", int8]["clip"]
        assert sizes["lowrank", int8]["step"] < 0.7 * sizes["dense", int8]["step"]


def test_a_low_rank_lstm_stores_its_factors_not_their_product():
    model = _model("lstm", True, hidden=100, ranks=(9, 12))
    clip, _ = build_graphs(_describe(model, (99, 32), None, None))
    shapes = {t.name: tuple(t.dims) for t in clip.graph.initializer if len(t.dims) == 2}
    assert shapes == {"L0_W_R_T": (32, 9), "L0_W_L_T": (9, 400), "L0_U_R_T": (100, 12), "L0_U_L_T": (12, 400),
                      "CLS_T": (100, 10)}


def test_the_fp32_check_is_relative_to_the_size_of_the_logits():
    # float32 rounding grows with the logits: a trained model's logits of ±50 differ by more than 1e-4 in absolute
    # terms while agreeing to 7 digits (the C export checks the same way)
    from strrnn.deploy.onnx_graph import _relative_error

    expected = np.array([[100.0, 0.5], [-50.0, 0.0]])
    assert _relative_error(expected, expected + [[0.01, 0.0], [0.0, 0.0]]) == pytest.approx(1e-4)
    assert _relative_error(expected, expected + [[0.0, 0.01], [0.0, 0.0]]) == pytest.approx(0.01)  # below 1: absolute
    assert _relative_error(expected, expected - [[0.0, 0.0], [0.02, 0.0]]) == pytest.approx(4e-4)
    assert np.isnan(_relative_error(expected, expected * np.nan))
