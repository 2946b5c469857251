"""Speed of strrnn's recurrent runner on the CPU, as ratios measured side by side in one process.

Training step = forward + backward + Adam on a keyword-spotting batch: batch 100, 99 steps, input 32,
hidden 100, a linear classifier on the final state, 12 classes. Each model is timed in interleaved
rounds (one training step of every model per round, order rotated each round and reversed every other
round: ``benchmarks.timing.interleaved(..., reverse_odd_rounds=True)``) and every figure is the
median over rounds of the per-round ratio: this machine's speed drifts (and other jobs share it), so
timing one model after another swings ratios by +-30%.

Rows (ratio = numerator / denominator, lower is faster):

* strrnn FastGRNN (dense, hand-written backward through time) / ``torch.nn.GRU`` -- target <= 0.35 (FastGRNN
  does about a third of a GRU's matrix work);
* strrnn FastGRNN with the kernel switched off (plain autograd loop, projection hoisted) / ``nn.GRU``;
* EdgeML's own FastGRNN (``edgeml_pytorch.graph.rnn.FastGRNN`` from the ``edgeml-pytorch`` package on PyPI: its
  ``BaseRNN`` per-step loop) / ``nn.GRU`` -- skipped, with the reason in the table, where the package is not
  installed (a benchmark-only extra: ``pip install edgeml-pytorch``);
* FastGRNN + LowRankSTR (free factors, k = 32 / 100) / dense FastGRNN -- target <= 1.10;
* FastGRNN + LowRankSTR (orthogonal factors) / dense FastGRNN -- reported;
* strrnn LSTM + LowRankSTR (fused nn.LSTM kernel with the materialized weights) / ``nn.LSTM`` -- target <= 1.5,
  at full rank and at the ranks STR learned on FSDD (18, 26);
* strrnn LSTM at hidden 256 + LowRankSTR with the default orthogonal factors / ``nn.LSTM`` at hidden 256 -- target
  <= 1.3;
* inference of an exported rank-(12, 40) FastGRNN keyword spotter / the full-rank one, batch 1
  streaming (``model.step`` frame by frame) and batch 256 (whole sequence), with the multiply-add ratio
  (more ranks, onnxruntime and int8: ``python -m benchmarks.inference_latency``).

All of it at 1 thread and at torch's default thread count.

    python -m benchmarks.rnn_speed                  # full (>= 30 rounds after warm-up)
    python -m benchmarks.rnn_speed --quick          # a few rounds, for a smoke test
    python -m benchmarks.rnn_speed --out benchmarks/results/rnn_speed/table.md
    python -m benchmarks.rnn_speed --threads 1 --clock thread   # CPU time of the timing thread (loaded machine)
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

import strrnn
from benchmarks import command_line
from benchmarks.timing import interleaved, ratios
from strrnn.models import KeywordSpotter

B, T, I, H, C = 100, 99, 32, 100, 12


# ---------------------------------------------------------------------------------------------------
# EdgeML's own FastGRNN (the edgeml-pytorch package), when installed
# ---------------------------------------------------------------------------------------------------
def edgeml_fastgrnn():
    """``(edgeml_pytorch.graph.rnn.FastGRNN, None)``, or ``(None, why not)`` where the package cannot be used."""
    try:
        import edgeml_pytorch.utils as edgeml_utils
    except ImportError:
        return None, "edgeml-pytorch is not installed (pip install edgeml-pytorch)"
    # edgeml_pytorch.graph.rnn imports its CUDA extension `fastgrnn_cuda` (built from the EdgeML repository, not
    # part of the PyPI package) whenever it finds nvcc; only the package's CPU classes are timed here.
    find_cuda = edgeml_utils.findCUDA
    edgeml_utils.findCUDA = lambda: None
    try:
        from edgeml_pytorch.graph.rnn import FastGRNN
    except Exception as err:  # noqa: BLE001 - any failure of a third-party import means: skip the row
        return None, f"edgeml_pytorch.graph.rnn does not import ({type(err).__name__}: {err})"
    finally:
        edgeml_utils.findCUDA = find_cuda
    return FastGRNN, None


# ---------------------------------------------------------------------------------------------------
# Models under test: each a closure doing one training step
# ---------------------------------------------------------------------------------------------------
class TorchRNNClassifier(nn.Module):
    def __init__(self, kind, hidden=H):
        super().__init__()
        self.rnn = kind(I, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, C)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.fc(out[:, -1])


class EdgeMLClassifier(nn.Module):
    """EdgeML's FastGRNN (sigmoid gate, tanh update, full rank: its defaults) + the same linear head."""

    def __init__(self, fastgrnn_cls):
        super().__init__()
        self.rnn = fastgrnn_cls(I, H, batch_first=True)
        self.fc = nn.Linear(H, C)

    def forward(self, x):
        return self.fc(self.rnn(x)[:, -1])


def _spotter(cell="fastgrnn", lowrank=None, kernel=True, max_rank=None, hidden=H, retract=False):
    model = KeywordSpotter(n_features=I, n_classes=C, cell=cell, hidden_size=hidden)
    if not kernel:
        model.rnn.cells[0].use_kernel = False
    if lowrank:  # orthogonal factors as --mode lowrank has them: threshold relative to max|m|
        orthogonal = lowrank == "orthogonal"
        strrnn.lowrank_rnn(model, factors=lowrank, max_rank=max_rank, relative=orthogonal, retract=retract)
    return model


def build_training_models():
    """``{name: one training step}`` for every contender (``edgeml`` only where the package is usable)."""
    torch.manual_seed(0)
    edgeml_cls, _ = edgeml_fastgrnn()
    models = {
        "gru": TorchRNNClassifier(nn.GRU),
        "lstm": TorchRNNClassifier(nn.LSTM),
        "fastgrnn": _spotter(),
        "fastgrnn_loop": _spotter(kernel=False),
        **({"edgeml": EdgeMLClassifier(edgeml_cls)} if edgeml_cls is not None else {}),
        "fastgrnn_lr_free": _spotter(lowrank="free"),
        "fastgrnn_lr_orth": _spotter(lowrank="orthogonal"),
        "lstm_lr_free": _spotter("lstm", lowrank="free"),
        # the ranks LSTM + STR learned on FSDD (benchmarks/results/rank_vs_accuracy/100ep)
        "lstm_lr_learned": _spotter("lstm", lowrank="free", max_rank={"W": 18, "U": 26}),
        # issue 20's size: STR with its default (orthogonal) factors on an LSTM at hidden 256, vs nn.LSTM
        "lstm256": TorchRNNClassifier(nn.LSTM, hidden=256),
        "lstm256_lr_orth": _spotter("lstm", lowrank="orthogonal", hidden=256),
        "lstm256_lr_orth_retract": _spotter("lstm", lowrank="orthogonal", hidden=256, retract=True),
        "fastgrnn_lr_orth_retract": _spotter(lowrank="orthogonal", retract=True),
    }
    x = torch.randn(B, T, I)
    y = torch.randint(0, C, (B,))
    steps = {}
    for name, model in models.items():
        params = strrnn.param_groups(model, weight_decay=1e-3) if strrnn.has_str(model) else model.parameters()
        opt = torch.optim.Adam(params, lr=1e-3)

        def step(model=model, opt=opt):
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        steps[name] = step
    return steps


TRAIN_ROWS = [
    ("FastGRNN (strrnn, hand-written BPTT) / nn.GRU", "fastgrnn", "gru", 0.35),
    ("FastGRNN (strrnn, autograd loop, no kernel) / nn.GRU", "fastgrnn_loop", "gru", None),
    ("EdgeML FastGRNN (edgeml-pytorch package) / nn.GRU", "edgeml", "gru", None),
    ("FastGRNN + LowRankSTR free (k=32/100) / dense FastGRNN", "fastgrnn_lr_free", "fastgrnn", 1.10),
    ("FastGRNN + LowRankSTR orthogonal / dense FastGRNN", "fastgrnn_lr_orth", "fastgrnn", None),
    ("LSTM + LowRankSTR free (strrnn) / nn.LSTM", "lstm_lr_free", "lstm", 1.5),
    ("LSTM + LowRankSTR free at ranks (18, 26) / nn.LSTM", "lstm_lr_learned", "lstm", 1.5),
    ("LSTM hidden 256 + LowRankSTR orthogonal (the default) / nn.LSTM", "lstm256_lr_orth", "lstm256", 1.3),
    ("same, orthogonal kept by retraction (retract=True) / nn.LSTM", "lstm256_lr_orth_retract", "lstm256", 1.3),
    ("FastGRNN + LowRankSTR orthogonal, retract=True / dense FastGRNN", "fastgrnn_lr_orth_retract", "fastgrnn",
     None),
]


def ratio_stats(times, num, den):
    r = sorted(ratios(times, num, den))
    q = statistics.quantiles(r, n=4) if len(r) >= 4 else [r[0], statistics.median(r), r[-1]]
    return statistics.median(r), q[0], q[2]


# ---------------------------------------------------------------------------------------------------
# Exported low-rank inference
# ---------------------------------------------------------------------------------------------------
def build_inference_models(rank_w=12, rank_u=40):
    torch.manual_seed(0)
    full = KeywordSpotter(n_features=I, n_classes=C, hidden_size=H).eval()
    lr = KeywordSpotter(n_features=I, n_classes=C, hidden_size=H)
    strrnn.lowrank_rnn(lr, max_rank={"W": rank_w, "U": rank_u})
    small = strrnn.export(lr).eval()
    cell = small.rnn.cells[0]
    assert cell.W_left.shape[1] == rank_w and cell.U_left.shape[1] == rank_u, "export did not keep factors"
    macs_full = H * I + H * H
    macs_lr = rank_w * (H + I) + rank_u * (H + H)
    return full, small, macs_lr / macs_full


def inference_fns(full, small):
    x1 = torch.randn(1, T, I)
    x256 = torch.randn(256, T, I)

    def stream(model):
        def run():
            with torch.no_grad():
                state = None
                for t in range(T):
                    _, state = model.step(x1[:, t], state)
        return run

    def batch(model):
        def run():
            with torch.no_grad():
                model(x256)
        return run

    return {"full_stream": stream(full), "lr_stream": stream(small), "full_b256": batch(full), "lr_b256": batch(small)}


def run(threads: int, rounds: int, warmup: int, clock=time.perf_counter):
    torch.set_num_threads(threads)
    steps = build_training_models()
    t = interleaved(steps, rounds, warmup, reverse_odd_rounds=True, clock=clock)
    train = [(label, *ratio_stats(t, num, den), target) if num in t else (label, None, None, None, target)
             for label, num, den, target in TRAIN_ROWS]
    abs_ms = {n: statistics.median(v) * 1e3 for n, v in t.items()}
    full, small, mac_ratio = build_inference_models()
    ti = interleaved(inference_fns(full, small), rounds, warmup, reverse_odd_rounds=True, clock=clock)
    infer = [
        ("exported rank-(12,40) / full rank, batch 1 streaming (99 x step)", *ratio_stats(ti, "lr_stream",
                                                                                          "full_stream")),
        ("exported rank-(12,40) / full rank, batch 256 (whole sequence)", *ratio_stats(ti, "lr_b256", "full_b256")),
    ]
    return train, infer, mac_ratio, abs_ms


def markdown(results, rounds, warmup, command) -> str:
    lines = [
        "# RNN speed (CPU)",
        "",
        f"- date: {datetime.datetime.now().isoformat(timespec='minutes')}",
        f"- machine: {platform.processor() or platform.machine()}, {platform.platform()}; torch {torch.__version__}",
        f"- command: `{command}`",
        f"- {rounds} interleaved rounds after {warmup} warm-up rounds; median of per-round ratios "
        "[inter-quartile range]. Lower is faster.",
        "- training step: forward + backward + Adam, batch 100 x 99 steps x 32 features, hidden 100, "
        "12-class linear head on the final state.",
        "",
    ]
    for threads, (train, infer, mac_ratio, abs_ms) in results.items():
        lines += [f"## {threads} thread(s)", "", "| training step | ratio | IQR | target | met |",
                  "|---|---|---|---|---|"]
        for label, med, lo, hi, target in train:
            if med is None:
                lines.append(f"| {label} | skipped: {edgeml_fastgrnn()[1]} | | | |")
                continue
            met = "" if target is None else ("yes" if med <= target else f"**no** (+{(med / target - 1) * 100:.0f}%)")
            lines.append(f"| {label} | {med:.3f} | {lo:.3f}-{hi:.3f} | {'' if target is None else f'<= {target}'} "
                         f"| {met} |")
        lines += ["", "| inference | ratio | IQR | multiply-add ratio |", "|---|---|---|---|"]
        for label, med, lo, hi in infer:
            lines.append(f"| {label} | {med:.3f} | {lo:.3f}-{hi:.3f} | {mac_ratio:.3f} |")
        lines += ["", "Median step times (ms; drift-prone, for orientation only): "
                  + ", ".join(f"{k} {v:.1f}" for k, v in abs_ms.items()), ""]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="few rounds (smoke test; not for quoting)")
    ap.add_argument("--rounds", type=int, default=None, help="measured rounds (default 40; --quick: 5)")
    ap.add_argument("--threads", type=int, nargs="*", default=None,
                    help="thread counts to measure (default: 1 and torch's default)")
    ap.add_argument("--clock", choices=("wall", "thread"), default="wall",
                    help="wall time (default), or the calling thread's CPU time: leaves out the time other jobs take "
                         "the core away on a loaded machine (--threads 1 only)")
    ap.add_argument("--out", default=None, help="write the markdown table here")
    args = ap.parse_args(argv)
    rounds = args.rounds or (5 if args.quick else 40)
    warmup = 2 if args.quick else 5
    default_threads = torch.get_num_threads()
    threads = args.threads or sorted({1, default_threads})
    if args.clock == "thread" and threads != [1]:
        ap.error("--clock thread measures one thread's CPU time: use it with --threads 1")
    clock = time.thread_time if args.clock == "thread" else time.perf_counter
    results = {}
    for n in threads:
        results[n] = run(n, rounds, warmup, clock)
        print(markdown({n: results[n]}, rounds, warmup, "(partial)"), flush=True)
    torch.set_num_threads(default_threads)
    command = command_line("benchmarks.rnn_speed", sys.argv[1:])
    text = markdown(results, rounds, warmup, command)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        # hand-written notes (from a "## Notes" heading on) survive a rerun; the tables above them are rewritten
        previous = out.read_text() if out.is_file() else ""
        notes = previous[previous.index(NOTES):] if NOTES in previous else ""
        out.write_text(text + "\n" + ("\n" + notes if notes else ""))
    return results


NOTES = "## Notes"


if __name__ == "__main__":
    main()
