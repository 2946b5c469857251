"""Inference latency of exported FastGRNN keyword spotters: dense vs low-rank vs int8, PyTorch and onnxruntime.

The edge use: a keyword spotter (32 log-mel features x 99 frames of 10 ms = one 1-s clip, hidden 100, 12
classes, last-state pooling) exported with ``strrnn.export``:

* **streaming, batch 1**: one 10-ms frame per call, the state carried (``model.step`` in PyTorch; a one-frame
  ONNX graph ``(x_t, h) -> (logits, h')`` in onnxruntime); a clip = 99 such calls;
* **whole clips, batch 256**: ``model(x)`` on (256, 99, 32) (the whole-sequence ONNX graph in onnxruntime).

Models: the full-rank spotter and the same spotter at each ``--ranks`` pair ``(rank of W, rank of U)``
(``strrnn.lowrank_rnn(max_rank=...)`` then ``strrnn.export``: factors ``W_left``/``W_right``, ``U_left``/``U_right``).
Runtimes: PyTorch (no_grad), onnxruntime fp32, and onnxruntime int8 (``onnxruntime.quantization.quantize_dynamic``
of the fp32 ONNX file, int8 weights). Every contender of one thread count is timed in the same interleaved rounds
(:func:`benchmarks.timing.interleaved`, order rotated and reversed every other round); ratios are medians of
per-round ratios. Target (issue 16): a model whose multiply-adds per frame fall to ``r`` of full rank runs in
``<= 1.15 r`` of the full-rank time, for every runtime and both batch sizes. The multiply-adds counted are the
cell's ``W`` and ``U`` products per frame (``r (out + in)`` for a factored weight, ``out * in`` for a dense one).

    python -m benchmarks.inference_latency                 # full: 30 rounds, 1 thread and torch's default
    python -m benchmarks.inference_latency --quick         # smoke test: rank (12, 40), 5 rounds, printed only
    python -m benchmarks.inference_latency --out inference_latency.md --clock thread --threads 1

``--clock thread`` times the calling thread's CPU time instead of wall time: on a machine loaded by other jobs it
leaves out the time the core is taken away (single thread only; not for quoting as latency).
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

import strrnn
from benchmarks import command_line
from benchmarks.timing import interleaved, ratios
from strrnn.models import KeywordSpotter, StreamState

T, I, H, C = 99, 32, 100, 12
CLIP_BATCH = 256
DEFAULT_RANKS = ((12, 40), (8, 24), (4, 12))
DEFAULT_OUT = "benchmarks/results/inference_latency/table.md"
SLACK = 1.15  # time ratio allowed per unit of multiply-add ratio
NOTES = "## Notes"


# ---------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------
def build_models(ranks) -> dict[str, nn.Module]:
    """``{"dense": full rank, "r12-40": rank (12, 40), ...}``: exported spotters in eval mode, same seed."""
    torch.manual_seed(0)
    models = {"dense": strrnn.export(KeywordSpotter(n_features=I, n_classes=C, hidden_size=H)).eval()}
    for rank_w, rank_u in ranks:
        torch.manual_seed(0)
        model = KeywordSpotter(n_features=I, n_classes=C, hidden_size=H)
        strrnn.lowrank_rnn(model, max_rank={"W": rank_w, "U": rank_u})
        small = strrnn.export(model).eval()
        cell = small.rnn.cells[0]
        for name, rank in (("W", rank_w), ("U", rank_u)):
            left = cell._parameters.get(f"{name}_left")
            if left is None or left.shape[1] != rank:
                raise RuntimeError(f"export did not keep {name} as rank-{rank} factors")
        models[f"r{rank_w}-{rank_u}"] = small
    return models


def cell_macs(model: nn.Module) -> int:
    """Multiply-adds per frame of the cell's ``W`` and ``U`` products as exported (factors or dense)."""
    cell = model.rnn.cells[0]
    total = 0
    for name in ("W", "U"):
        p = cell._parameters
        total += p[f"{name}_left"].numel() + p[f"{name}_right"].numel() if f"{name}_left" in p else p[name].numel()
    return total


class StreamStep(nn.Module):
    """One frame of a single-layer, last-state-pooling spotter: ``(x_t (B, F), h (1, B, H)) -> (logits (B, C),
    h' (1, B, H))`` -- what an edge device runs every 10 ms (``model.step`` with the state carried)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x_t: torch.Tensor, h: torch.Tensor):
        logits, state = self.model.step(x_t, StreamState(h, None, 0))
        return logits, state.rnn


# ---------------------------------------------------------------------------------------------------
# ONNX files and sessions
# ---------------------------------------------------------------------------------------------------
def _onnx_export(module: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str]) -> None:
    dynamic = {name: {0: "batch"} for name in ("features", "logits")} if inputs == ["features"] else \
        {"x": {0: "batch"}, "h": {1: "batch"}, "logits": {0: "batch"}, "h_out": {1: "batch"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer notices
        torch.onnx.export(module, args, str(path), dynamo=False, input_names=inputs, output_names=outputs,
                          dynamic_axes=dynamic)


def _quantize(fp32: Path, int8: Path) -> None:
    """int8 weights, activations quantized on the fly: what ``strrnn export --int8`` writes (onnxruntime's
    pre-processing, then ``quantize_dynamic``)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = int8.with_suffix(".prepared.onnx")
    quant_pre_process(str(fp32), str(prepared))
    quantize_dynamic(str(prepared), str(int8), weight_type=QuantType.QInt8)


def _session(path: Path, threads: int):
    import onnxruntime

    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    # idle pool threads must not spin: the other contenders of a round run right after on the same cores
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def export_files(models: dict[str, nn.Module], folder: Path) -> dict[tuple[str, str, str], Path]:
    """Write ``{(model, "clip"|"stream", "fp32"|"int8"): path}``: the whole-clip and one-frame ONNX graphs of every
    model and their int8 quantizations."""
    files = {}
    x = torch.zeros(2, T, I)
    x_t, h = torch.zeros(2, I), torch.zeros(1, 2, H)
    for name, model in models.items():
        clip, stream = folder / f"{name}-clip.onnx", folder / f"{name}-stream.onnx"
        _onnx_export(model, (x,), clip, ["features"], ["logits"])
        _onnx_export(StreamStep(model), (x_t, h), stream, ["x", "h"], ["logits", "h_out"])
        for mode, path in (("clip", clip), ("stream", stream)):
            files[(name, mode, "fp32")] = path
            files[(name, mode, "int8")] = path.with_suffix(".int8.onnx")
            _quantize(path, files[(name, mode, "int8")])
    return files


# ---------------------------------------------------------------------------------------------------
# Contenders: each a callable running one streamed clip (99 calls, batch 1) or one batch of 256 clips
# ---------------------------------------------------------------------------------------------------
def _torch_stream(model, frames):
    def run():
        with torch.no_grad():
            state = None
            for x_t in frames:
                _, state = model.step(x_t, state)
    return run


def _torch_clip(model, x):
    def run():
        with torch.no_grad():
            model(x)
    return run


def _ort_stream(session, frames):
    h0 = np.zeros((1, 1, H), np.float32)

    def run():
        h = h0
        for x_t in frames:
            _, h = session.run(None, {"x": x_t, "h": h})
    return run


def _ort_clip(session, x):
    def run():
        session.run(None, {"features": x})
    return run


def check_outputs(models, sessions, x_clip: torch.Tensor) -> dict[str, float]:
    """Largest |logit difference| to PyTorch per (model, runtime) on 8 clips, both graphs (streamed: last frame)."""
    x = x_clip[:8]
    worst = {}
    for name, model in models.items():
        with torch.no_grad():
            expected = model(x).numpy()
        for rt in ("fp32", "int8"):
            got_clip = sessions[(name, "clip", rt)].run(None, {"features": x.numpy()})[0]
            h = np.zeros((1, len(x), H), np.float32)
            for t in range(T):
                got_stream, h = sessions[(name, "stream", rt)].run(None, {"x": x[:, t].numpy(), "h": h})
            worst[f"{name} {rt}"] = float(max(np.abs(got_clip - expected).max(), np.abs(got_stream - expected).max()))
    return worst


def contenders(models, sessions) -> dict[str, callable]:
    torch.manual_seed(1)
    clip = torch.randn(CLIP_BATCH, T, I)
    one = torch.randn(1, T, I)
    frames = [one[:, t].clone() for t in range(T)]  # sliced beforehand: the frame arrives as its own buffer
    np_frames, np_clip = [f.numpy() for f in frames], clip.numpy()
    fns = {}
    for name, model in models.items():
        fns[f"{name}|torch|stream"] = _torch_stream(model, frames)
        fns[f"{name}|torch|clip"] = _torch_clip(model, clip)
        for rt in ("fp32", "int8"):
            fns[f"{name}|ort-{rt}|stream"] = _ort_stream(sessions[(name, "stream", rt)], np_frames)
            fns[f"{name}|ort-{rt}|clip"] = _ort_clip(sessions[(name, "clip", rt)], np_clip)
    return fns


RUNTIMES = ("torch", "ort-fp32", "ort-int8")


def run(threads: int, models, files, rounds: int, warmup: int, clock) -> dict:
    torch.set_num_threads(threads)
    sessions = {key: _session(path, threads) for key, path in files.items()}
    fns = contenders(models, sessions)
    times = interleaved(fns, rounds, warmup, reverse_odd_rounds=True, clock=clock)
    return {"times": times, "errors": check_outputs(models, sessions, torch.randn(8, T, I))}


# ---------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------
def _stats(r: list[float]) -> tuple[float, float, float]:
    r = sorted(r)
    q = statistics.quantiles(r, n=4) if len(r) >= 4 else [r[0], statistics.median(r), r[-1]]
    return statistics.median(r), q[0], q[2]


def _latency(seconds: float, mode: str) -> tuple[float, float]:
    """(µs per 10-ms frame, ms per 1-s clip) from one contender call."""
    if mode == "stream":  # one call = one clip streamed frame by frame at batch 1
        return seconds / T * 1e6, seconds * 1e3
    return seconds / (CLIP_BATCH * T) * 1e6, seconds / CLIP_BATCH * 1e3  # one call = 256 clips at once


def markdown(results: dict, models, rounds: int, warmup: int, clock: str, command: str) -> str:
    macs = {name: cell_macs(m) for name, m in models.items()}
    low = [n for n in models if n != "dense"]
    lines = [
        "# Inference latency of exported FastGRNN keyword spotters (CPU)",
        "",
        f"- date: {datetime.datetime.now().isoformat(timespec='minutes')}",
        f"- machine: {platform.processor() or platform.machine()}, {platform.platform()}; torch {torch.__version__}, "
        f"onnxruntime {_ort_version()}",
        f"- command: `{command}`",
        f"- {rounds} interleaved rounds after {warmup} warm-up rounds, clock: {clock}; ratios are medians of "
        "per-round ratios [inter-quartile range]. Lower is faster.",
        f"- spotter: {I} features x {T} frames, hidden {H}, {C} classes, last-state pooling; streaming = batch 1, "
        f"one frame per call, state carried; clip = batch {CLIP_BATCH}, whole 1-s clips.",
        "- multiply-adds per frame (cell W and U): "
        + ", ".join(f"{n} {macs[n]} ({macs[n] / macs['dense']:.2f})" for n in models),
        "",
    ]
    for threads, res in results.items():
        times = res["times"]
        lines += [f"## {threads} thread(s)", "", "### Latency", "",
                  "| model | runtime | streaming µs / frame | streaming ms / clip | batch-256 µs / frame "
                  "| batch-256 ms / clip |", "|---|---|---|---|---|---|"]
        for name in models:
            for rt in RUNTIMES:
                s_frame, s_clip = _latency(statistics.median(times[f"{name}|{rt}|stream"]), "stream")
                b_frame, b_clip = _latency(statistics.median(times[f"{name}|{rt}|clip"]), "clip")
                lines.append(f"| {name} | {rt} | {s_frame:.1f} | {s_clip:.2f} | {b_frame:.3f} | {b_clip:.3f} |")
        lines += ["", f"### Low rank / dense (same runtime); target <= {SLACK} x multiply-add ratio", "",
                  "| model | runtime | batch | time ratio | IQR | multiply-add ratio | target | met |",
                  "|---|---|---|---|---|---|---|---|"]
        for name in low:
            r = macs[name] / macs["dense"]
            for rt in RUNTIMES:
                for mode, label in (("stream", "1 (streaming)"), ("clip", f"{CLIP_BATCH} (clips)")):
                    med, lo, hi = _stats(ratios(times, f"{name}|{rt}|{mode}", f"dense|{rt}|{mode}"))
                    target = SLACK * r
                    met = "yes" if med <= target else f"**no** (+{(med / target - 1) * 100:.0f}%)"
                    lines.append(f"| {name} | {rt} | {label} | {med:.3f} | {lo:.3f}-{hi:.3f} | {r:.3f} | "
                                 f"<= {target:.3f} | {met} |")
        lines += ["", "### int8 / fp32 (onnxruntime, same model)", "", "| model | batch | time ratio | IQR |",
                  "|---|---|---|---|"]
        for name in models:
            for mode, label in (("stream", "1 (streaming)"), ("clip", f"{CLIP_BATCH} (clips)")):
                med, lo, hi = _stats(ratios(times, f"{name}|ort-int8|{mode}", f"{name}|ort-fp32|{mode}"))
                lines.append(f"| {name} | {label} | {med:.3f} | {lo:.3f}-{hi:.3f} |")
        lines += ["", "Largest |logit difference| to PyTorch (8 random clips, clip and streamed graphs): "
                  + ", ".join(f"{k} {v:.1e}" for k, v in res["errors"].items()), ""]
    return "\n".join(lines)


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def parse_ranks(text: str) -> tuple[int, int]:
    try:
        w, u = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected RANK_W,RANK_U (e.g. 12,40), got {text!r}") from None
    if not (0 < w < min(H, I) and 0 < u < H):
        raise argparse.ArgumentTypeError(f"ranks must lie in 1..{min(H, I) - 1} (W) and 1..{H - 1} (U), got {text}")
    return w, u


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="rank (12, 40) only, 5 rounds (smoke test; not for quoting)")
    ap.add_argument("--rounds", type=int, default=None, help="measured rounds (default 30; --quick: 5)")
    ap.add_argument("--ranks", type=parse_ranks, nargs="*", default=None, metavar="RW,RU",
                    help="low-rank models as rank of W, rank of U (default: 12,40 8,24 4,12)")
    ap.add_argument("--threads", type=int, nargs="*", default=None,
                    help="thread counts (torch and onnxruntime; default: 1 and torch's default)")
    ap.add_argument("--clock", choices=("wall", "thread"), default="wall",
                    help="wall time (default), or the calling thread's CPU time (loaded machine, 1 thread only)")
    ap.add_argument("--out", default=None,
                    help=f"markdown table (default {DEFAULT_OUT}; with --quick: printed only unless given)")
    args = ap.parse_args(argv)
    try:
        import onnxruntime  # noqa: F401
        import onnxruntime.quantization  # noqa: F401
    except ImportError:
        ap.error("needs onnx and onnxruntime: pip install onnx onnxruntime")
    rounds = args.rounds or (5 if args.quick else 30)
    warmup = 2 if args.quick else 5
    ranks = args.ranks or (((12, 40),) if args.quick else DEFAULT_RANKS)
    default_threads = torch.get_num_threads()
    threads = args.threads or sorted({1, default_threads})
    if args.clock == "thread" and threads != [1]:
        ap.error("--clock thread measures one thread's CPU time: use it with --threads 1")
    clock = time.thread_time if args.clock == "thread" else time.perf_counter
    models = build_models(ranks)
    results = {}
    with tempfile.TemporaryDirectory(prefix="strrnn-latency-") as folder:
        files = export_files(models, Path(folder))
        for n in threads:
            results[n] = run(n, models, files, rounds, warmup, clock)
            print(markdown({n: results[n]}, models, rounds, warmup, args.clock, "(partial)"), flush=True)
    torch.set_num_threads(default_threads)
    command = command_line("benchmarks.inference_latency", argv if argv is not None else sys.argv[1:])
    text = markdown(results, models, rounds, warmup, args.clock, command)
    if args.quick and args.out is None:  # a smoke test never overwrites the quoted table
        return results
    out = Path(args.out or DEFAULT_OUT)
    out.parent.mkdir(parents=True, exist_ok=True)
    # hand-written notes (from a "## Notes" heading on) survive a rerun; the tables above them are rewritten
    previous = out.read_text() if out.is_file() else ""
    notes = previous[previous.index(NOTES):] if NOTES in previous else ""
    out.write_text(text + "\n" + ("\n" + notes if notes else ""))
    print(f"wrote {out}")
    return results


if __name__ == "__main__":
    main()
