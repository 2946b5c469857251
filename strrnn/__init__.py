"""strrnn — Soft Threshold Reparameterization (STR): learn how much to compress each layer.

Two modes share one threshold engine (:mod:`strrnn.threshold`):

* low-rank mode (:class:`LowRankSTR`): ``W = A·diag(S(m, k·exp(s)))·B`` learns the rank of every recurrent
  weight matrix;
* unstructured mode (:class:`UnstructuredSTR`): ``W_eff = S(W, k·sigmoid(s))`` learns each layer's sparsity.

Typical use::

    import strrnn
    model = strrnn.models.build("keyword_spotter", in_chans=32, num_classes=12)
    strrnn.lowrank_rnn(model, factors="orthogonal")       # LowRankSTR on every recurrent W and U
    opt = torch.optim.Adam(strrnn.param_groups(model, weight_decay=1e-3), lr=1e-3)
    ...                                                   # train: the loss and the decay learn the thresholds
    print(strrnn.report(model))     # per-tensor rank / sparsity, threshold, parameters
    small = strrnn.export(model)    # plain modules: rank-r factors / exact zeros
    print(strrnn.model_size(small)) # {"fp32_kb": ..., "int8_kb": ...} of what export stores

The names below are loaded on first use (PEP 562), so that ``import strrnn`` — and with it every command line's
``--help`` — does not wait for torch. Each name always is what its module defines: a function stays a function.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

__version__ = "0.2.0"

# public name -> the module (relative to this package) that defines it
_NAMES = {
    "export": ".exporting", "has_str": ".exporting",
    "LowRankLinear": ".low_rank", "LowRankSTR": ".low_rank", "low_rank_factors": ".low_rank", "lowrank": ".low_rank",
    "lowrank_rnn": ".low_rank", "rank": ".low_rank", "spectrum": ".low_rank",
    "model_size": ".reporting", "report": ".reporting",
    "STRRecipe": ".str_recipe", "SpectralGMP": ".spectral_gmp", "RankSchedule": ".spectral_gmp",
    "Threshold": ".threshold", "get_threshold_function": ".threshold", "param_groups": ".threshold",
    "register_threshold_function": ".threshold", "soft_threshold": ".threshold", "threshold_functions": ".threshold",
    "UnstructuredSTR": ".unstructured_str", "unstructured": ".unstructured_str", "sparsify": ".unstructured_str",
    "sparsity": ".unstructured_str", "sparse": ".unstructured_str",
    "load": ".predictor",
}
# subpackages and modules reachable as attributes (``strrnn.cells``, ``strrnn.data``, ...)
_SUBMODULES = {"cells", "models", "data", "callbacks", "deploy"}

# deprecated names (strrnn.sparse, strrnn.RankSchedule) still resolve but are not exported by `import *`
__all__ = sorted([*(n for n in _NAMES if n not in ("sparse", "RankSchedule")), "cells", "models", "data", "deploy"])

if TYPE_CHECKING:  # what IDEs and type checkers see; at run time __getattr__ below imports on first use
    from . import callbacks, cells, data, deploy, models  # noqa: F401
    from .exporting import export, has_str  # noqa: F401
    from .low_rank import (  # noqa: F401
        LowRankLinear,
        LowRankSTR,
        low_rank_factors,
        lowrank,
        lowrank_rnn,
        rank,
        spectrum,
    )
    from .predictor import load  # noqa: F401
    from .reporting import model_size, report  # noqa: F401
    from .spectral_gmp import RankSchedule, SpectralGMP  # noqa: F401
    from .str_recipe import STRRecipe  # noqa: F401
    from .threshold import (  # noqa: F401
        Threshold,
        get_threshold_function,
        param_groups,
        register_threshold_function,
        soft_threshold,
        threshold_functions,
    )
    from .unstructured_str import UnstructuredSTR, sparse, sparsify, sparsity, unstructured  # noqa: F401


def __getattr__(name: str):
    if name in _NAMES:
        value = getattr(import_module(_NAMES[name], __name__), name)
    elif name in _SUBMODULES:
        value = import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'strrnn' has no attribute {name!r}")
    globals()[name] = value  # later look-ups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_NAMES, *_SUBMODULES})
