"""Per-tensor STR report: learned ranks and sparsities, thresholds, parameter counts.

:func:`report` is the table users print after training and the one the training CLI writes as
``report.csv``. Parameter accounting follows the paper: a rank-``r`` matrix ``(out, in)`` costs
``min(r·(out + in), out·in)`` parameters after export (the factored form is kept only where it is smaller);
an unstructured tensor costs its nonzeros. ``macs`` is the multiply-add count of one application of the
tensor to one input vector (for a matrix it equals its parameter count; conv layers multiply it by their
output positions — see ``cnn.flops.profile`` for whole-network FLOPs).
"""

from __future__ import annotations

import math

import pandas as pd
import torch
from torch import nn
from torch.nn.utils import parametrize

from .low_rank import LowRankSTR, low_rank_params, originals
from .unstructured import UnstructuredSTR

__all__ = ["report", "iter_str_tensors", "REPORT_COLUMNS"]

REPORT_COLUMNS = [
    "module", "tensor", "mode", "shape", "rank", "max_rank", "sparsity", "threshold",
    "params_dense", "params", "macs_dense", "macs",
]


def iter_str_tensors(model: nn.Module):
    """Yield ``(path, module, name, parametrization)`` for every STR-parametrized tensor of ``model``."""
    for path, module in model.named_modules():
        if not parametrize.is_parametrized(module):
            continue
        for name, plist in module.parametrizations.items():
            for p in plist:
                if isinstance(p, (LowRankSTR, UnstructuredSTR)):
                    yield path, module, name, p


def _row(path: str, module: nn.Module, name: str, p) -> dict:
    with torch.no_grad():
        if isinstance(p, LowRankSTR):
            m = originals(module, name)[1]
            r = p.rank_of(m)
            out, inp = p.matrix_shape
            dense = out * inp
            params = low_rank_params(out, inp, r)
            alpha = float(p.alpha(m)) if p.threshold is not None else 0.0
            mode = "lowrank" if p.threshold is not None else "fixed-rank"
            spars = float("nan")
            max_rank = p.max_rank
        else:
            weight = getattr(module, name)
            dense = weight.numel()
            params = int(torch.count_nonzero(weight))
            spars = 100.0 * (1.0 - params / dense)
            alpha = float(p.threshold().mean())
            mode, r, max_rank = "unstructured", float("nan"), float("nan")
        shape = tuple(p.shape)
    return {
        "module": path or "(model)", "tensor": name, "mode": mode, "shape": "x".join(map(str, shape)),
        "rank": r, "max_rank": max_rank, "sparsity": spars, "threshold": alpha,
        "params_dense": dense, "params": params, "macs_dense": dense, "macs": params,
    }


def report(model: nn.Module) -> pd.DataFrame:
    """One row per STR-parametrized tensor of ``model`` plus a ``total`` row.

    Columns: ``module`` (dotted path), ``tensor``, ``mode`` (``lowrank``, ``fixed-rank`` or ``unstructured``),
    ``shape`` (e.g. ``"100x32"``), ``rank`` and ``max_rank`` (low-rank rows), ``sparsity`` (percent of exact
    zeros, unstructured rows; on the total row the percent of parameters removed), ``threshold`` (alpha, the
    mean for per-row thresholds), ``params_dense``, ``params`` (after :func:`strrnn.export`), ``macs_dense``
    and ``macs`` (multiply-adds per input vector).

    Returns an empty frame with these columns (and no total row) when ``model`` carries no STR tensor.
    """
    rows = [_row(*item) for item in iter_str_tensors(model)]
    frame = pd.DataFrame(rows, columns=REPORT_COLUMNS)
    if not rows:
        return frame
    dense, kept = int(frame["params_dense"].sum()), int(frame["params"].sum())
    total = {c: float("nan") for c in REPORT_COLUMNS}
    total.update({
        "module": "total", "tensor": "", "mode": "", "shape": "",
        "sparsity": 100.0 * (1.0 - kept / dense) if dense else math.nan,
        "params_dense": dense, "params": kept,
        "macs_dense": int(frame["macs_dense"].sum()), "macs": int(frame["macs"].sum()),
    })
    return pd.concat([frame, pd.DataFrame([total])], ignore_index=True)
