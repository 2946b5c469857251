"""C export (strrnn.deploy): the generated C99 compiles warning-free, computes PyTorch's logits on real FSDD clips for
every cell, dense and low rank, both poolings, one and two layers; streams frame by frame; int8 keeps the accuracy;
unsupported models and unwritable folders fail with one-line errors.

Tolerance of the fp32 C against PyTorch: ``|c - torch| <= 1e-4 * max(1, |torch|)`` per logit (absolute for small
logits, relative for large ones): the C sums in another order and uses a rational tanh (error 3.2e-7), so a few
ulps per operation, far below 1e-4. Predictions must be identical wherever PyTorch's top two logits are further
apart than that tolerance (a tie within float noise has no defined winner).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_nets import random_spotter
from torch import nn

import strrnn
from strrnn import artifacts as runs
from strrnn.deploy import compile_c, footprint, run_c, write_c
from strrnn.deploy.c_source import _HELPERS, INT32_MAX
from strrnn.models import KeywordSpotter

CC = shutil.which("cc")
needs_cc = pytest.mark.skipif(CC is None, reason="no C compiler: `cc` is not on PATH")
FSDD = Path(__file__).resolve().parents[2] / "shared" / "data" / "fsdd"
needs_fsdd = pytest.mark.skipif(not (FSDD / "recordings").is_dir(), reason=f"FSDD not found at {FSDD}")
STRICT = ("-std=c99", "-O2", "-Wall", "-Wextra", "-pedantic", "-Werror")  # the CI compile: any warning fails
TOL = 1e-4


def _close(c: np.ndarray, ref: np.ndarray) -> float:
    """Largest ``|c - ref| / max(1, |ref|)``."""
    return float((np.abs(c - ref) / np.maximum(1.0, np.abs(ref))).max())


def _same_predictions(c: np.ndarray, ref: np.ndarray) -> int:
    """Assert equal top classes wherever PyTorch's top two differ by more than the tolerance; return how many
    predictions were too close to call."""
    top2 = np.sort(ref, axis=-1)[..., -2:]
    decided = (top2[..., 1] - top2[..., 0]) > 2 * TOL * np.maximum(1.0, np.abs(top2[..., 1]))
    assert decided.mean() > 0.5  # the check below means something
    assert (c.argmax(-1) == ref.argmax(-1))[decided].all()
    return int((~decided).sum())


def _normalized(raw: np.ndarray, norm: dict) -> torch.Tensor:
    mean, std = np.asarray(norm["mean"], np.float32), np.asarray(norm["std"], np.float32)
    return torch.from_numpy(((raw - mean) / std).astype(np.float32))


@pytest.fixture(scope="module")
def fsdd():
    """FSDD's data module (set up) and the raw (unnormalized) features of its 300 test clips, (300, 99, 32)."""
    if not (FSDD / "recordings").is_dir():
        pytest.skip(f"FSDD not found at {FSDD}")
    dm = strrnn.data.get("fsdd", FSDD, progress=False)
    dm.setup("fit")
    test = dm.test_set
    raw = np.asarray(test.features[test.index], dtype=np.float32)
    return dm, raw, test.targets


def _model(cell: str, lowrank: bool, pooling: str, layers: int, hidden: int = 20, seed: int = 0) -> nn.Module:
    small = random_spotter(cell, lowrank, pooling, layers, hidden, seed=seed)
    if lowrank:  # really stored as factors (otherwise this test would not cover the factored path)
        assert all(f"{n}_left" in cell._parameters for cell in small.rnn.cells for n in ("W", "U"))
    return small


def _build(model, folder: Path, dm, **kw) -> Path:
    write_c(model, folder, input_shape=dm.input_shape, normalization=dm.normalization,
            class_names=dm.class_names, **kw)
    return compile_c(folder, flags=STRICT)


# --- exactness ---------------------------------------------------------------------------------------------------


@needs_cc
@needs_fsdd
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("pooling", ["last", "mean"])
@pytest.mark.parametrize("lowrank", [False, True], ids=["dense", "lowrank"])
@pytest.mark.parametrize("cell", ["fastgrnn", "fastrnn", "lstm", "gru"])
def test_fp32_c_computes_pytorchs_logits_on_fsdd_clips(cell, lowrank, pooling, layers, fsdd, tmp_path, one_thread):
    dm, raw, _ = fsdd
    model = _model(cell, lowrank, pooling, layers)
    clips = raw[::50]  # 6 clips: every digit speaker mix, 99 frames each
    got = run_c(_build(model, tmp_path, dm), clips)
    with torch.no_grad():
        ref = model(_normalized(clips, dm.normalization)).numpy()
    assert got.shape == ref.shape == (6, 10)
    assert _close(got, ref) <= TOL
    _same_predictions(got, ref)


@needs_cc
@needs_fsdd
@pytest.mark.parametrize("cell,pooling,layers", [("fastgrnn", "last", 1), ("lstm", "mean", 2), ("gru", "last", 2)])
def test_streaming_api_gives_the_logits_of_every_prefix(cell, pooling, layers, fsdd, tmp_path, one_thread):
    dm, raw, _ = fsdd
    model = _model(cell, True, pooling, layers, hidden=17)  # 17: panels of 8 plus a leftover row
    clips = raw[:3]
    exe = _build(model, tmp_path, dm)
    stream = run_c(exe, clips, stream=True)  # (3, 99, 10): the logits after every frame
    x = _normalized(clips, dm.normalization)
    state, ref = None, []
    with torch.no_grad():
        for t in range(x.shape[1]):
            logits, state = model.step(x[:, t], state)
            ref.append(logits.numpy())
    ref = np.stack(ref, axis=1)
    assert _close(stream, ref) <= TOL
    np.testing.assert_array_equal(stream[:, -1], run_c(exe, clips))  # the last frame's logits = the whole clip's


@needs_cc
@pytest.mark.parametrize("int8", [False, True])
def test_a_low_rank_classifier_and_factors_dearer_than_dense(int8, tmp_path):
    """A LowRankLinear classifier runs through its factors; factors that cost more than the dense matrix
    (r (out + in) >= out in) are multiplied out on the host. No normalization: raw frames go straight in."""
    torch.manual_seed(0)
    model = KeywordSpotter(n_features=8, n_classes=10, cell="fastrnn", hidden_size=20)
    strrnn.lowrank(model.classifier, max_rank=3, threshold=False)
    model = strrnn.export(model).eval()
    assert type(model.classifier).__name__ == "LowRankLinear"
    cell = model.rnn.cells[0]
    with torch.no_grad():
        cell.export_low_rank("W", torch.randn(20, 7) * 0.3, torch.randn(7, 8))
    assert cell.W_left.shape == (20, 7)  # 7 * (20 + 8) = 196 >= 160: the C stores W dense
    info = write_c(model, tmp_path, input_shape=(15, 8), int8=int8)
    assert info["macs_per_frame"] == 20 * 8 + 20 * 20 and info["logits_macs"] == 3 * (10 + 20)
    source = (tmp_path / "kws_model.c").read_text()
    assert "L0_W_L" not in source and "CLS_L" in source and "NORM_MEAN" not in source
    clips = np.random.default_rng(0).normal(size=(5, 15, 8)).astype(np.float32)
    got = run_c(compile_c(tmp_path, flags=STRICT), clips)
    with torch.no_grad():
        ref = model(torch.from_numpy(clips)).numpy()
    assert _close(got, ref) <= (0.05 if int8 else TOL)


# --- int8 ----------------------------------------------------------------------------------------------------------


@needs_cc
@needs_fsdd
@pytest.mark.parametrize("scales", ["row", "tensor"])
@pytest.mark.parametrize("cell,lowrank", [("fastgrnn", True), ("lstm", False), ("gru", True), ("fastrnn", False)])
def test_int8_logits_are_close_to_fp32_on_random_weights(cell, lowrank, scales, fsdd, tmp_path, one_thread):
    dm, raw, _ = fsdd
    model = _model(cell, lowrank, "mean", 2, hidden=24)
    clips = raw[::10]  # 30 clips
    fp32 = run_c(_build(model, tmp_path / "fp32", dm), clips)
    int8 = run_c(_build(model, tmp_path / "int8", dm, int8=True, scales=scales), clips)
    spread = np.abs(fp32).max()
    # measured (largest error / largest logit): per-row 0.4-1.4%, per-matrix 0.4-6.6% (FastGRNN's low-rank factors,
    # whose rows differ most in scale); a wrong scale or a wrapped sum is off by 100%
    assert np.abs(int8 - fp32).max() <= (0.04 if scales == "row" else 0.1) * spread
    assert (int8.argmax(1) == fp32.argmax(1)).mean() >= 0.9
    assert not np.allclose(int8, fp32, rtol=0, atol=1e-6)  # really another arithmetic


@pytest.fixture(scope="module")
def trained_run(fsdd, tmp_path_factory):
    """A FastGRNN (hidden 100, W, U at ranks 13, 23: the FSDD STR model at 50% of W,U) trained 6 epochs on FSDD,
    saved as a run folder (exported.pt with the data module's normalization and class names)."""
    from strrnn.cli.train import build_parser

    dm, _, _ = fsdd
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        config = vars(build_parser().parse_args([]))
        config.update(dataset="fsdd", data_dir=str(FSDD), mode="fixed-rank", rank_w=13, rank_u=23,
                      hidden_size=100, cell="fastgrnn", factors="free")
        torch.manual_seed(0)
        model = runs.build_model(config, dm)
        from strrnn.modes import get_mode

        get_mode("fixed-rank").apply(model, config)
        train = dm.train_set
        x = _normalized(np.asarray(train.features[train.index], np.float32), dm.normalization)
        y = torch.from_numpy(train.targets)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        generator = torch.Generator().manual_seed(0)
        for _ in range(6):
            perm = torch.randperm(len(x), generator=generator)
            for i in range(0, len(x), 100):
                idx = perm[i: i + 100]
                opt.zero_grad()
                nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
                opt.step()
        model.eval()
        out = tmp_path_factory.mktemp("c-run") / "run"
        out.mkdir()
        runs.save_exported(out / "exported.pt", runs.export_model(model), config, runs.learned_ranks(model), dm)
    finally:
        torch.set_num_threads(previous)
    return out


@needs_cc
@needs_fsdd
def test_int8_keeps_the_accuracy_of_a_trained_run_on_fsdds_test_set(trained_run, fsdd, tmp_path, one_thread):
    dm, raw, labels = fsdd
    model, payload = runs.load_exported(trained_run)
    with torch.no_grad():
        ref = model(_normalized(raw, payload["normalization"])).numpy()
    acc, ties = {"torch": (ref.argmax(1) == labels).mean()}, 0
    for int8 in (False, True):
        folder = tmp_path / ("int8" if int8 else "fp32")
        info = write_c(trained_run, folder, int8=int8)  # a run folder: shape, normalization, labels from it
        assert (info["frames"], info["features"], info["classes"]) == (99, 32, 10)
        got = run_c(compile_c(folder, flags=STRICT), raw)
        acc["int8" if int8 else "fp32"] = (got.argmax(1) == labels).mean()
        if not int8:
            assert _close(got, ref) <= TOL
            ties = _same_predictions(got, ref)
    assert acc["torch"] > 0.8  # trained: a 1-point comparison means something (measured: 91.0% for all three)
    assert abs(acc["fp32"] - acc["torch"]) <= ties / len(labels)
    assert abs(acc["int8"] - acc["fp32"]) <= 0.01, acc
    header = (tmp_path / "int8" / "kws_model.h").read_text()
    assert "#define KWS_FRAMES 99" in header and "#define KWS_FEATURES 32" in header
    assert '"seven"' in (tmp_path / "int8" / "kws_model.c").read_text()


# --- sizes ---------------------------------------------------------------------------------------------------------


@needs_cc
def test_footprint_counts_flash_ram_and_multiply_adds(tmp_path):
    torch.manual_seed(0)
    dense = strrnn.export(KeywordSpotter(n_features=32, n_classes=10, hidden_size=100)).eval()
    model = KeywordSpotter(n_features=32, n_classes=10, hidden_size=100, pooling="mean")
    strrnn.lowrank_rnn(model, max_rank={"W": 13, "U": 23}, threshold=False)
    lowrank = strrnn.export(model).eval()
    meta = {"input_shape": (99, 32), "normalization": {"mean": [0.0] * 32, "std": [1.0] * 32}}
    sizes = {(name, q): footprint(m, int8=q, **meta) for name, m in (("dense", dense), ("lowrank", lowrank))
             for q in (False, True)}
    # multiply-adds per frame: W and U as the C applies them; the classifier per logits call
    assert sizes["dense", False]["macs_per_frame"] == 100 * 32 + 100 * 100 == 13_200
    assert sizes["lowrank", False]["macs_per_frame"] == 13 * (100 + 32) + 23 * (100 + 100) == 6_316
    assert sizes["lowrank", True]["logits_macs"] == 1_000
    # state: h (100 floats) + frame counter; mean pooling adds the running sum
    assert sizes["dense", False]["state_bytes"] == 404 and sizes["lowrank", False]["state_bytes"] == 804
    for s in sizes.values():
        assert s["flash_source"] == "size -A of the compiled object"
        assert s["flash_bytes"] == s["code_bytes"] + s["rodata_bytes"] + s["data_bytes"] > s["const_bytes"]
        assert s["ram_bytes"] == s["state_bytes"] + s["scratch_bytes"] and s["bss_bytes"] == 0
    # fp32 arrays: every weight at 4 bytes; int8: 1 byte per weight plus fp32 scales and biases
    weights = 13_200 + 1_000
    assert sizes["dense", False]["const_bytes"] == 4 * (weights + 200 + 10 + 64)
    assert sizes["dense", True]["const_bytes"] == weights + 4 * (100 + 100 + 10) + 4 * (200 + 10 + 64)
    assert sizes["lowrank", True]["flash_bytes"] < 16 * 1024 < sizes["lowrank", False]["flash_bytes"]
    # the state size agrees with the compiler's sizeof
    write_c(lowrank, tmp_path, **meta)
    info = subprocess.run([str(compile_c(tmp_path, flags=STRICT)), "--info"], capture_output=True, text=True,
                          check=True).stdout.split()
    assert info == ["99", "32", "10", "804"]


@needs_cc
def test_the_c_nonlinearities_are_accurate(tmp_path):
    """nl_tanh (a rational fit, no libm) and nl_sigmoid against float64, over and beyond the clamp."""
    x = np.concatenate([np.linspace(-20, 20, 200_001), [0.0, -0.0, 1e-30, -1e-30, 1e-5]]).astype(np.float32)
    src = tmp_path / "nl.c"
    src.write_text("#include <stdint.h>\n#include <stdio.h>\n#include <string.h>\n" + _HELPERS["nl_tanh"]
                   + _HELPERS["nl_sigmoid"] + """
int main(void)
{
    float x;
    while (fread(&x, sizeof x, 1, stdin) == 1)
        printf("%.9g %.9g\\n", (double)nl_tanh(x), (double)nl_sigmoid(x));
    return 0;
}
""")
    exe = tmp_path / "nl"
    subprocess.run([CC, *STRICT, "-o", str(exe), str(src)], check=True)
    out = subprocess.run([str(exe)], input=x.astype("<f4").tobytes(), capture_output=True, check=True).stdout
    tanh, sigmoid = np.array(out.split(), dtype=np.float64).reshape(-1, 2).T
    x64 = x.astype(np.float64)
    assert np.abs(tanh - np.tanh(x64)).max() <= 4e-7
    assert np.abs(sigmoid - 1 / (1 + np.exp(-x64))).max() <= 2e-7
    small = (np.abs(x64) < 1e-2) & (x64 != 0)
    assert (np.abs(tanh[small] - np.tanh(x64[small])) / np.abs(x64[small])).max() <= 3e-7  # relative near 0
    assert np.abs(tanh).max() <= 1.0


# --- errors: one line each -----------------------------------------------------------------------------------------


def _one_line_error(match: str, fn, *args, **kw) -> str:
    with pytest.raises(ValueError, match=match) as info:
        fn(*args, **kw)
    assert "\n" not in str(info.value)
    return str(info.value)


META = {"input_shape": (12, 8)}


def _tiny(cell: str = "fastgrnn", **kw) -> nn.Module:
    torch.manual_seed(0)
    return strrnn.export(KeywordSpotter(n_features=8, n_classes=3, cell=cell, hidden_size=6, **kw)).eval()


def test_unsupported_models_are_refused_naming_what_is_supported(tmp_path):
    from cnn.models import build as build_cnn

    msg = _one_line_error("does not support the model", write_c, build_cnn("small_cnn", num_classes=3, in_chans=1),
                          tmp_path, **META)
    assert "fastgrnn, fastrnn, lstm, gru" in msg
    _one_line_error("bidirectional", write_c, _tiny(bidirectional=True), tmp_path, **META)
    _one_line_error("gate_nonlinearity 'softsign'.*supports sigmoid, tanh, relu", write_c,
                    _tiny(gate_nonlinearity=nn.functional.softsign), tmp_path, **META)
    model = _tiny()
    model.classifier = nn.Sequential(nn.Linear(6, 3))
    _one_line_error("the classifier Sequential", write_c, model, tmp_path, **META)
    parametrized = KeywordSpotter(n_features=8, n_classes=3, hidden_size=6)
    strrnn.lowrank_rnn(parametrized)
    _one_line_error(r"parametrizations.*strrnn.export\(model\)", write_c, parametrized, tmp_path, **META)
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_bad_arguments_are_refused(tmp_path):
    model = _tiny()
    _one_line_error("input shape", write_c, model, tmp_path)
    _one_line_error("input_shape has 9 features per frame, the model reads 8", write_c, model, tmp_path,
                    input_shape=(12, 9))
    _one_line_error("one normalization mean/std per feature", write_c, model, tmp_path, **META,
                    normalization={"mean": np.zeros((12, 8)).tolist(), "std": np.ones((12, 8)).tolist()})
    _one_line_error("prefix must be a C identifier", write_c, model, tmp_path, **META, prefix="kws-1")
    _one_line_error("scales must be one of row, tensor", write_c, model, tmp_path, **META, int8=True,
                    scales="channel")
    _one_line_error("2 class names for 3 classes", write_c, model, tmp_path, **META,
                    class_names=["a", "b"])
    _one_line_error("no C compiler", compile_c, tmp_path, cc="no-such-compiler-strrnn")


def test_int8_refuses_a_product_that_could_overflow_int32(tmp_path):
    n = INT32_MAX // (127 * 127) + 1  # 133,145 inputs: n * 127 * 127 no longer fits in int32
    torch.manual_seed(0)
    model = strrnn.export(KeywordSpotter(n_features=n, n_classes=2, cell="fastrnn", hidden_size=1)).eval()
    msg = _one_line_error(r"int8 export refused: the product L0_W 1x133145 can accumulate 133145\*127\*127",
                          write_c, model, tmp_path, input_shape=(2, n), int8=True)
    assert "int8=False" in msg
    assert not any(tmp_path.iterdir())
    one_less = strrnn.export(KeywordSpotter(n_features=n - 1, n_classes=2, cell="fastrnn", hidden_size=1)).eval()
    write_c(one_less, tmp_path, input_shape=(2, n - 1), int8=True)  # the largest width that fits is accepted


def test_an_unwritable_folder_is_refused_and_nothing_is_half_written(tmp_path):
    model = _tiny()
    blocker = tmp_path / "file"
    blocker.write_text("keep")
    _one_line_error("is a file, not a folder", write_c, model, blocker, **META)
    _one_line_error("cannot write the C files", write_c, model, blocker / "sub", **META)
    assert blocker.read_text() == "keep"
    _one_line_error("cannot write the C files", write_c, model, "/proc/strrnn-c-export", **META)
    _one_line_error("cannot write the C files", write_c, model, "/proc/self", **META)
    # a folder in the way of the last file: the other two are not replaced either, and no temporary file is left
    out = tmp_path / "out"
    write_c(model, out, **META)
    before = {p.name: p.read_text() for p in out.iterdir()}
    (out / "main.c").unlink()
    (out / "main.c").mkdir()
    _one_line_error("a folder of that name is in the way", write_c, _tiny("gru"), out, **META)
    assert {p.name for p in out.iterdir()} == {"kws_model.h", "kws_model.c", "main.c"}
    assert all((out / name).read_text() == text for name, text in before.items() if name != "main.c")


def test_a_truncated_clip_is_reported_by_the_checker(tmp_path):
    if CC is None:
        pytest.skip("no C compiler: `cc` is not on PATH")
    write_c(_tiny(), tmp_path, **META)
    exe = compile_c(tmp_path, flags=STRICT)
    done = subprocess.run([str(exe)], input=b"\0" * (12 * 8 * 4 + 5), capture_output=True)
    assert done.returncode == 1 and b"clip 2 is truncated: 5 of 384 bytes" in done.stderr
    assert len(done.stdout.splitlines()) == 1  # the complete clip before it was scored
    with pytest.raises(ValueError, match=r"clips must have shape \(N, 12, 8\)"):
        run_c(exe, np.zeros((2, 12, 7), np.float32))
