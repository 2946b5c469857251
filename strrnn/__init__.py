"""strrnn — Soft Threshold Reparameterization (STR): learn how much to compress each layer.

Two modes share one threshold engine (:mod:`strrnn.threshold`):

* low-rank mode (:class:`LowRankSTR`): ``W = A·diag(S(m, k·exp(s)))·B`` learns the rank of every recurrent
  weight matrix;
* unstructured mode (:class:`UnstructuredSTR`): ``W_eff = S(W, k·sigmoid(s))`` learns each layer's sparsity.

Typical use (the low-rank recipe: :class:`RankSchedule`)::

    import strrnn
    model = strrnn.models.build("keyword_spotter", in_chans=32, num_classes=12)
    strrnn.lowrank_rnn(model, factors="orthogonal")       # LowRankSTR on every recurrent W and U
    opt = torch.optim.Adam(strrnn.param_groups(model, weight_decay=1e-3), lr=1e-3)
    sched = strrnn.RankSchedule(model, opt, total_steps=epochs * len(loader), strength=0.6)
    ...                                                   # opt.step(); sched.step() every batch
    print(strrnn.report(model))     # per-tensor rank / sparsity, threshold, parameters
    small = strrnn.export(model)    # plain modules: rank-r factors / exact zeros
    print(strrnn.model_size(small)) # {"fp32_kb": ..., "int8_kb": ...} of what export stores
"""

from importlib import import_module

from .exporting import export, has_str
from .low_rank import LowRankLinear, LowRankSTR, low_rank_factors, lowrank, lowrank_rnn, rank, spectrum
from .reporting import model_size, report
from .schedule import RankSchedule
from .threshold import (
    Threshold,
    get_threshold_function,
    param_groups,
    register_threshold_function,
    soft_threshold,
    threshold_functions,
)
from .unstructured import UnstructuredSTR, sparse, sparsify, sparsity

__version__ = "0.1.0"

__all__ = [
    "LowRankSTR", "UnstructuredSTR", "Threshold", "LowRankLinear",
    "soft_threshold", "register_threshold_function", "get_threshold_function", "threshold_functions",
    "lowrank", "lowrank_rnn", "low_rank_factors", "rank", "spectrum",
    "sparse", "sparsify", "sparsity",
    "param_groups", "RankSchedule", "report", "model_size", "export", "has_str",
    "cells", "models", "data", "load",
]

_SUBMODULES = {"cells", "models", "data", "train", "compare", "evaluate", "callbacks"}


def __getattr__(name: str):
    # Import heavier submodules (cells, models, data) on first use so `import strrnn` stays light.
    if name == "load":  # strrnn.load(run_dir) -> strrnn.predictor.Predictor (imports Lightning, the data modules)
        return import_module(".predictor", __name__).load
    if name in _SUBMODULES:
        return import_module(f".{name}", __name__)
    raise AttributeError(f"module 'strrnn' has no attribute {name!r}")
