"""Per-tensor STR report: learned ranks and sparsities, thresholds, parameter counts.

:func:`report` is the table users print after training and the one the training CLI writes as
``report.csv``. Parameter accounting follows the paper: a rank-``r`` matrix ``(out, in)`` costs
``min(r·(out + in), out·in)`` parameters after export (the factored form is kept only where it is smaller);
an unstructured tensor costs its nonzeros. ``macs`` is the multiply-add count of one application of the
tensor to one input vector (for a matrix it equals its parameter count; conv layers multiply it by their
output positions — see ``cnn.flops.profile`` for whole-network FLOPs).

Sizes (:func:`model_size`, and the report's ``fp32_kb``/``int8_kb`` columns) are what the exported model stores,
in KB of 1024 bytes:

* **fp32**: 4 bytes per element of every floating-point parameter and buffer;
* **int8**: what onnxruntime's per-tensor dynamic quantization (``strrnn export --int8``) stores:
  every floating-point tensor of two or more dimensions (weight matrices, factors, conv kernels: the operands
  of MatMul/Gemm/Conv) at 1 byte per element plus 5 bytes (its fp32 scale and int8 zero point); every other
  floating-point tensor (biases, gains, gates' scalars) stays at 4 bytes per element.

Exact zeros are stored like any value (the ONNX graph is dense), and non-floating buffers (counters such as
BatchNorm's ``num_batches_tracked``) are not counted: inference graphs do not hold them. These are the weights
of the exported model; an ``.onnx`` file holds its graph too, and the ONNX LSTM/GRU operator takes dense
matrices, so there a low-rank weight is stored as its product (see :mod:`strrnn.export`).
"""

from __future__ import annotations

import math

import pandas as pd
import torch
from torch import nn
from torch.nn.utils import parametrize

from .low_rank import LowRankSTR, factored_is_cheaper, low_rank_params, originals
from .unstructured_str import UnstructuredSTR

__all__ = ["report", "model_size", "iter_str_tensors", "REPORT_COLUMNS"]

REPORT_COLUMNS = [
    "module", "tensor", "mode", "shape", "rank", "max_rank", "sparsity", "threshold",
    "params_dense", "params", "macs_dense", "macs", "fp32_kb", "int8_kb",
]

_KB = 1024
_FP32 = 4
_INT8_OVERHEAD = 5  # per quantized tensor: one fp32 scale and one int8 zero point


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
            # stored as `params` elements in one matrix, or two factors where that is smaller
            stored, matrices = params, 2 if factored_is_cheaper(out, inp, r) else 1
        else:
            weight = getattr(module, name)
            dense = weight.numel()
            params = int(torch.count_nonzero(weight))
            spars = 100.0 * (1.0 - params / dense)
            alpha = float(p.threshold().mean())
            mode, r, max_rank = "unstructured", float("nan"), float("nan")
            stored, matrices = dense, 1 if weight.dim() >= 2 else 0  # exact zeros are stored too
        shape = tuple(p.shape)
    int8 = stored + matrices * _INT8_OVERHEAD if matrices else _FP32 * stored
    return {
        "module": path or "(model)", "tensor": name, "mode": mode, "shape": "x".join(map(str, shape)),
        "rank": r, "max_rank": max_rank, "sparsity": spars, "threshold": alpha,
        "params_dense": dense, "params": params, "macs_dense": dense, "macs": params,
        "fp32_kb": _FP32 * stored / _KB, "int8_kb": int8 / _KB,
    }


def report(model: nn.Module) -> pd.DataFrame:
    """One row per STR-parametrized tensor of ``model`` plus a ``total`` row.

    Columns: ``module`` (dotted path), ``tensor``, ``mode`` (``lowrank``, ``fixed-rank`` or ``unstructured``),
    ``shape`` (e.g. ``"100x32"``), ``rank`` and ``max_rank`` (low-rank rows), ``sparsity`` (percent of exact
    zeros, unstructured rows; on the total row the percent of parameters removed), ``threshold`` (alpha, the
    mean for per-row thresholds), ``params_dense``, ``params`` (after :func:`strrnn.export`), ``macs_dense``
    and ``macs`` (multiply-adds per input vector), ``fp32_kb`` and ``int8_kb`` (the tensor's storage after
    export, see the module docstring; the whole model's: :func:`model_size` of the exported model).

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
        "fp32_kb": float(frame["fp32_kb"].sum()), "int8_kb": float(frame["int8_kb"].sum()),
    })
    return pd.concat([frame, pd.DataFrame([total])], ignore_index=True)


def model_size(model: nn.Module) -> dict[str, float]:
    """Storage of an exported model in KB (1024 bytes): ``{"fp32_kb": ..., "int8_kb": ...}``.

    ``fp32_kb``: 4 bytes per element of every floating-point parameter and buffer. ``int8_kb``: what
    onnxruntime's dynamic quantization stores (``strrnn export --int8``): 1 byte per element plus 5
    bytes (fp32 scale, int8 zero point) for every floating-point tensor of two or more dimensions, 4 bytes per
    element for every other floating-point tensor. Shared tensors count once; non-floating buffers not at all.
    Example: ``nn.Linear(100, 10)`` is (1000 + 10)·4 = 4040 bytes at fp32 and 1000 + 5 + 10·4 = 1045 at int8.

    Raises:
        ValueError: ``model`` still carries STR parametrizations (whose trained originals are not what export
            stores): pass ``strrnn.export(model)``.
    """
    if any(True for _ in iter_str_tensors(model)):
        raise ValueError("model_size counts what an exported model stores; this model still carries STR "
                         "parametrizations: pass strrnn.export(model)")
    fp32 = int8 = 0
    for tensor in [*model.parameters(), *model.buffers()]:  # both iterators skip tensors shared by two modules
        if not tensor.is_floating_point():
            continue
        n = tensor.numel()
        fp32 += _FP32 * n
        int8 += n + _INT8_OVERHEAD if tensor.dim() >= 2 else _FP32 * n
    return {"fp32_kb": fp32 / _KB, "int8_kb": int8 / _KB}
