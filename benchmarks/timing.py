"""Interleaved timing: the only way to get stable ratios on a machine whose speed drifts.

Each round runs every contender once (order rotated each round); the ratio of two contenders is computed within a
round, and the median over rounds is reported. Every speed ratio in benchmarks/ (overhead, cnn_overhead, rnn_speed,
gpu_check) is timed by :func:`interleaved`.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def interleaved(steps: dict[str, Callable[[], object]], rounds: int = 30, warmup: int = 3, *, block: int = 1,
                reverse_odd_rounds: bool = False, sync: Callable[[], object] | None = None,
                clock: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
    """Time every callable in ``steps`` in ``rounds`` rounds; return each one's seconds per call, one per round.

    ``warmup`` untimed rounds come first. Round ``r`` runs the contenders in their order rotated by ``r``
    (a b c, b c a, c a b, ...), reversed on odd rounds when ``reverse_odd_rounds``. In a round each contender runs
    ``block`` calls in a row and its figure is their mean. ``sync`` (e.g. ``torch.cuda.synchronize``) is called
    after the warm-up and before and after every timed block, so that asynchronous work is timed to completion.
    ``clock`` is wall time by default; ``time.thread_time`` counts only the CPU time of the calling thread, which
    leaves out the time other jobs on a loaded machine take the core away (valid for single-threaded steps only).
    """
    names = list(steps)
    for _ in range(warmup):
        for name in names:
            steps[name]()
    if sync:
        sync()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        k = r % len(names)
        order = names[k:] + names[:k]
        if reverse_odd_rounds and r % 2:
            order.reverse()
        for name in order:
            if sync:
                sync()
            start = clock()
            for _ in range(block):
                steps[name]()
            if sync:
                sync()
            times[name].append((clock() - start) / block)
    return times


def ratios(times: dict[str, list[float]], num: str, den: str) -> list[float]:
    """The per-round ratios ``times[num][i] / times[den][i]``."""
    return [a / b for a, b in zip(times[num], times[den], strict=True)]


def median_ratio(times: dict[str, list[float]], num: str, den: str) -> float:
    """Median over rounds of ``times[num][i] / times[den][i]``."""
    return statistics.median(ratios(times, num, den))
