"""Interleaved timing: the only way to get stable ratios on a machine whose speed drifts.

Each round runs one step of every contender (order rotated each round); the ratio of two contenders is
computed within a round, and the median over rounds is reported.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def interleaved(steps: dict[str, Callable[[], object]], rounds: int = 30, warmup: int = 3) -> dict[str, list[float]]:
    """Time every callable in ``steps`` once per round, rotating the order; return seconds per round."""
    names = list(steps)
    for _ in range(warmup):
        for name in names:
            steps[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            start = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - start)
    return times


def median_ratio(times: dict[str, list[float]], num: str, den: str) -> float:
    """Median over rounds of ``times[num][i] / times[den][i]``."""
    return statistics.median(a / b for a, b in zip(times[num], times[den]))
