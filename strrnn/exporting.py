"""Export a trained STR model to plain modules with no strrnn parametrization left.

* A low-rank ``nn.Linear`` becomes a :class:`strrnn.LowRankLinear` holding the rank-``r`` factors
  (cut spectrum entries dropped, the kept spectrum folded into the left factor), where that is smaller than
  the dense weight; otherwise a plain ``nn.Linear`` with the materialized weight.
* Any other module with a low-rank tensor: if it defines ``export_low_rank(name, left, right)`` (the recurrent
  cells do), it receives the factors and computes with them; otherwise the weight is materialized densely.
* Unstructured tensors are written back as dense tensors with exact zeros.

The exported model computes the same outputs as the trained one (to float tolerance) and round-trips through
``torch.save(model.state_dict())`` / ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils import parametrize

from .low_rank import LowRankLinear, LowRankSTR, factored_is_cheaper, originals
from .reporting import iter_str_tensors

__all__ = ["export", "has_str"]


def has_str(model: nn.Module) -> bool:
    """Whether any tensor of ``model`` still carries an STR parametrization."""
    return any(True for _ in iter_str_tensors(model))


def _set_submodule(root: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, child = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, child, new)


@torch.no_grad()
def _kept_factors(module: nn.Module, name: str, p: LowRankSTR) -> tuple[torch.Tensor, torch.Tensor]:
    left, spec, right = p.factors(*originals(module, name))
    keep = spec != 0
    return (left[:, keep] * spec[keep]).contiguous(), right[keep].contiguous()


def _materialize(module: nn.Module, name: str) -> None:
    """Remove the parametrization of ``module.<name>``, leaving its current value as a plain Parameter.

    ``remove_parametrizations`` registers the value as a *buffer* when it does not require grad — which is
    every tensor under ``torch.no_grad()``; an exported weight must stay a Parameter either way.
    """
    with torch.enable_grad():
        parametrize.remove_parametrizations(module, name, leave_parametrized=True)
    if name in module._buffers:
        value = module._buffers.pop(name)
        module.register_parameter(name, nn.Parameter(value, requires_grad=False))


def export(model: nn.Module) -> nn.Module:
    """Return a deep copy of ``model`` with every STR parametrization removed (see the module docstring).

    ``model`` itself is left untouched. The copy is in the same train/eval mode as ``model``.
    """
    exported = copy.deepcopy(model)
    for module in exported.modules():
        if parametrize.is_parametrized(module):
            # parametrize injects tensor properties into a class that deepcopy shares with the original;
            # removing them from the copy's class would break `model`, so give the copy a class of its own.
            cls = module.__class__
            module.__class__ = type(cls.__name__, cls.__bases__, dict(cls.__dict__))
    # Collect first: exporting replaces modules and parametrizations while we iterate.
    for path, module, name, p in list(iter_str_tensors(exported)):
        if isinstance(p, LowRankSTR):
            left, right = _kept_factors(module, name, p)
            _materialize(module, name)
            out_features, in_features = p.matrix_shape
            factored_is_smaller = factored_is_cheaper(out_features, in_features, left.shape[1])
            if isinstance(module, nn.Linear) and name == "weight" and factored_is_smaller:
                replacement = LowRankLinear.from_factors(left, right, module.bias).train(module.training)
                if not path:  # the model itself is the layer
                    return replacement
                _set_submodule(exported, path, replacement)
            elif hasattr(module, "export_low_rank") and factored_is_smaller:
                module.export_low_rank(name, left, right)
        else:
            _materialize(module, name)
    return exported
