"""Threads for small recurrent models: a training step at 2 threads against 1, by cell and hidden size.

    python -m benchmarks.threads [--rounds 10] [--hidden 32 100 256 512] [--out benchmarks/results/threads/table.md]

Training step = forward + backward + Adam of the keyword spotter (batch 100, 99 frames, 32 features, 12 classes).
For each cell and hidden size the two thread counts are timed in interleaved rounds in one process
(``torch.set_num_threads`` switched between the steps) and the median of the per-round ratios t(2) / t(1) is
reported — below 1, the second thread pays. Measured twice: alone, and with one other single-threaded process
computing beside it (the situation of a shared machine, or of two runs side by side), because OpenMP's waiting
threads then compete with it for the cores. The default ``--threads`` (``strrnn.cli.threads.ONE_THREAD_HIDDEN``)
comes from this table.
"""

from __future__ import annotations

import argparse
import datetime
import multiprocessing
import platform
import sys
from pathlib import Path

import torch
from torch import nn

from benchmarks import RESULTS, command_line
from benchmarks.timing import interleaved, median_ratio
from strrnn.cli.threads import available_cores
from strrnn.models import KeywordSpotter

B, T, I, C = 100, 99, 32, 12


def _busy(stop) -> None:
    """Another process computing at one thread until ``stop`` is set (the competing job)."""
    torch.set_num_threads(1)
    a = torch.randn(256, 256)
    while not stop.is_set():
        a = torch.tanh(a @ a) * 0.5


def training_step(cell: str, hidden: int):
    torch.manual_seed(0)
    model = KeywordSpotter(n_features=I, n_classes=C, cell=cell, hidden_size=hidden)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.randn(B, T, I), torch.randint(0, C, (B,))

    def step():
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    return step


def measure(cells, hiddens, rounds: int) -> dict[tuple[str, int], float]:
    """``{(cell, hidden): median t(2 threads) / t(1 thread)}``."""
    result = {}
    for cell in cells:
        for hidden in hiddens:
            step = training_step(cell, hidden)

            def at(n, step=step):
                def run():
                    torch.set_num_threads(n)
                    step()
                return run

            times = interleaved({"one": at(1), "two": at(2)}, rounds=rounds, warmup=1)
            result[cell, hidden] = median_ratio(times, "two", "one")
            print(f"{cell} hidden {hidden}: t(2)/t(1) = {result[cell, hidden]:.2f}", flush=True)
    torch.set_num_threads(1)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--hidden", type=int, nargs="+", default=[32, 100, 256, 512])
    parser.add_argument("--cells", nargs="+", default=["fastgrnn", "lstm"])
    parser.add_argument("--quick", action="store_true", help="2 rounds, hidden 32 and 100, FastGRNN only")
    parser.add_argument("--out", type=Path, default=RESULTS / "threads" / "table.md")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.hidden, args.cells = 2, [32, 100], ["fastgrnn"]
        args.out = args.out.parent / "quick" / args.out.name
    alone = measure(args.cells, args.hidden, args.rounds)
    stop = multiprocessing.Event()
    other = multiprocessing.Process(target=_busy, args=(stop,), daemon=True)
    other.start()
    try:
        shared = measure(args.cells, args.hidden, args.rounds)
    finally:
        stop.set()
        other.join(timeout=10)
    lines = [f"# Training-step time at 2 threads / 1 thread ({datetime.date.today()})", "",
             f"- machine: {platform.machine()}, {available_cores()} cores, torch {torch.__version__}",
             f"- command: `{command_line('benchmarks.threads', sys.argv[1:] if argv is None else argv)}`",
             f"- median of per-round ratios over {args.rounds} interleaved rounds; below 1: the second thread pays",
             "", "| cell | hidden | alone | beside one other computing process |", "|---|---|---|---|"]
    lines += [f"| {cell} | {hidden} | {alone[cell, hidden]:.2f} | {shared[cell, hidden]:.2f} |"
              for cell, hidden in alone]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
