"""The two curves the recipes share: GMP's cubic ramp and the cosine learning-rate factor (restartable).

Pure functions of the training progress, so that a schedule built on them resumes exactly from a step count.
"""

from __future__ import annotations

import math

__all__ = ["cubic", "cosine"]


def cubic(progress: float) -> float:
    """GMP's schedule ``1 - (1 - p)^3`` for ``p`` clamped to ``[0, 1]``: fast at first, flat at the end."""
    p = min(1.0, max(0.0, progress))
    return 1.0 - (1.0 - p) ** 3


def cosine(step: int, start: int, total: int) -> float:
    """Cosine factor from 1 at ``start`` to 0 at ``total`` (held at 0 after it): ``0.5·(1 + cos(π·p))`` with
    ``p = (step - start) / (total - start)`` clamped to ``[0, 1]``; a restart is a later ``start``."""
    progress = min(1.0, max(0.0, (step - start) / max(1, total - start)))
    return 0.5 * (1.0 + math.cos(math.pi * progress))
