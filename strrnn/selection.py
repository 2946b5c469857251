"""Which weights of a model a compression method touches: one selection rule for STR and the pruning baselines.

A *layer pattern* is a module path (``"fc"``), a path prefix (``"layer1"`` selects everything under it), an
``fnmatch`` pattern (``"layer*.0.conv1"``), or — instead of a list of patterns — a predicate
``(path, module) -> bool``. Candidates are the weight of every Conv1d/2d/3d and Linear layer and, with
``recurrent=True``, the weights a recurrent cell declares in ``recurrent_weights`` (e.g. ``("W", "U")``).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable

from torch import nn

__all__ = ["WEIGHT_LAYERS", "LayerPatterns", "matches", "select_weights"]

WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)

LayerPatterns = Iterable[str] | Callable[[str, nn.Module], bool] | None


def matches(path: str, module: nn.Module, patterns: LayerPatterns) -> bool:
    """Whether layer ``path`` (``module``) is selected by ``patterns`` (None selects nothing)."""
    if patterns is None:
        return False
    if callable(patterns):
        return bool(patterns(path, module))
    if isinstance(patterns, str):
        patterns = [patterns]
    return any(path == p or path.startswith(p + ".") or fnmatch.fnmatchcase(path, p) for p in patterns)


def select_weights(
    model: nn.Module, include: LayerPatterns = None, exclude: LayerPatterns = None, recurrent: bool = True
) -> list[tuple[str, nn.Module, str]]:
    """``(path, module, tensor name)`` of every candidate weight, in definition order.

    ``include`` keeps only the layers it selects (None: every candidate); ``exclude`` drops the layers it selects.
    """
    chosen = []
    for path, module in model.named_modules():
        names = getattr(type(module), "recurrent_weights", None) if recurrent else None
        if not names:
            names = ("weight",) if isinstance(module, WEIGHT_LAYERS) else ()
        if names and (include is None or matches(path, module, include)) and not matches(path, module, exclude):
            chosen += [(path, module, name) for name in names]
    return chosen
