"""Where factored weights live and when they pay: the one place that knows both.

* :func:`originals` reads the tensors :mod:`torch.nn.utils.parametrize` stores for a parametrized weight
  (``parametrizations.<name>.original`` or ``original0..N``);
* :func:`factored_is_cheaper` / :func:`low_rank_params` are the cost rule: a rank-``r`` ``(out, in)`` matrix kept as
  factors ``(out, r)·(r, in)`` costs ``r·(out+in)`` parameters and multiply-adds per input vector instead of
  ``out·in``, so it is stored and multiplied factored only where that is smaller.

Imports only torch: the recurrent cells use it without depending on any threshold.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

__all__ = ["originals", "low_rank_params", "factored_is_cheaper", "caching_parametrizations"]


def originals(module: nn.Module, name: str) -> tuple[torch.Tensor, ...]:
    """The stored originals of parametrized ``module.<name>`` (``parametrizations.<name>.original[N]``).

    For :class:`LowRankSTR`: ``(A (out, r), m (r,), B (r, in))``; for a single-tensor parametrization:
    ``(original,)``. The one place that knows :mod:`torch.nn.utils.parametrize`'s storage layout.
    """
    plist = module.parametrizations[name]
    if hasattr(plist, "original"):
        return (plist.original,)
    count = sum(1 for key in plist._parameters if key.startswith("original"))
    return tuple(getattr(plist, f"original{i}") for i in range(count))


def low_rank_params(out_features: int, in_features: int, rank: int) -> int:
    """Parameters (and multiply-adds per input vector) of a rank-``rank`` ``(out, in)`` matrix after export:
    ``min(r·(out+in), out·in)`` — it is stored factored only where that is smaller."""
    return min(rank * (out_features + in_features), out_features * in_features)


def factored_is_cheaper(out_features: int, in_features: int, rank: int) -> bool:
    """Whether rank-``rank`` factors ``(out, r)·(r, in)`` cost fewer parameters and multiply-adds than the dense
    ``(out, in)`` matrix: ``r·(out+in) < out·in``. Export, the report and the recurrent runner all use this rule."""
    return rank * (out_features + in_features) < out_features * in_features


def caching_parametrizations() -> bool:
    """Whether the caller runs inside ``torch.nn.utils.parametrize.cached()``.

    torch exposes no public query for this; the private flag is read here only, so a torch change breaks one
    function. Inside the context every parametrized weight is computed once and reused, so reading factors
    instead would bypass the cache.
    """
    return bool(getattr(parametrize, "_cache_enabled", 0))
