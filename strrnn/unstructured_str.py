r"""Unstructured STR: learn each layer's sparsity by soft-thresholding its weights.

.. math::  W_{\mathrm{eff}} = S(W, g(s)) = \operatorname{sign}(W)\operatorname{relu}(|W| - k\,\sigma(s))

applied to conv and linear weights (the paper applies it to every layer, the first conv and the classifier
included; normalization parameters and biases stay dense). One threshold per layer by default, one per output
row/channel with ``per_row=True``. ``right_inverse(W)`` adds the threshold back to every nonzero entry, so a
dense (pretrained) weight is reproduced exactly at registration. Exporting writes ``W_eff`` back as a dense
tensor with exact zeros; its per-layer sparsity is the budget STR learned.

``W_eff`` and its gradients (:math:`\partial W_{\mathrm{eff}}/\partial W = [|W| > g(s)]`,
:math:`\partial W_{\mathrm{eff}}/\partial s = -\operatorname{sign}(W)\,g'(s)` on kept entries) come from one
fused autograd node (:func:`strrnn.threshold.soft_threshold_fused`), bit-identical to the formula above through
autograd but without its chain of weight-sized temporaries, which on CPU cost a training step more than the
arithmetic does (``python -m benchmarks.cnn_overhead --compare-unfused`` times both against dense).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from .selection import WEIGHT_LAYERS, select_weights
from .threshold import Threshold, attach, soft_threshold, soft_threshold_fused

__all__ = ["UnstructuredSTR", "unstructured", "sparsify", "sparsity", "sparse", "SPARSIFIABLE"]

SPARSIFIABLE = WEIGHT_LAYERS


class UnstructuredSTR(nn.Module):
    """Parametrization ``W -> sign(W)·relu(|W| - g(s))`` of a weight of any shape.

    Args:
        shape: shape of the weight ``(out, *)``.
        g, k, s_init: threshold function (default ``"sigmoid"``), its scale and the initial ``s``
            (see :class:`strrnn.Threshold`; the paper used -100 on CIFAR and -3200 … -12800 on ImageNet).
        per_row: one threshold per output row/channel (``s`` of shape ``(out, 1, …)``).
    """

    is_str = True  # an STR parametrization: it owns the tensor's threshold (see strrnn.threshold.attach)
    # One autograd node for the soft threshold (strrnn.threshold.soft_threshold_fused): the same values and
    # gradients as the plain formula, without its chain of weight-sized temporaries. False selects the plain
    # formula (a reference for tests and benchmarks; set it on an instance or on the class).
    fused = True

    def __init__(
        self,
        shape: Iterable[int],
        g: str | Callable = "sigmoid",
        k: float = 1.0,
        s_init: float = -10.0,
        per_row: bool = False,
    ) -> None:
        super().__init__()
        shape = tuple(int(d) for d in shape)
        if len(shape) == 0 or any(d <= 0 for d in shape):
            raise ValueError(f"UnstructuredSTR needs a non-empty weight with at least one dimension; got {shape}")
        self.shape = shape
        s_shape = (shape[0],) + (1,) * (len(shape) - 1) if per_row else ()
        self.threshold = Threshold(s_shape, g=g, k=k, s_init=s_init)

    def forward(self, W: torch.Tensor) -> torch.Tensor:
        """``W`` (shape) -> ``S(W, g(s))`` with exact zeros below the threshold."""
        return (soft_threshold_fused if self.fused else soft_threshold)(W, self.threshold())

    def right_inverse(self, W: torch.Tensor) -> torch.Tensor:
        """Inverse of the soft threshold on the nonzero entries of ``W``: ``sign(W)·(|W| + alpha)``."""
        if tuple(W.shape) != self.shape:
            raise ValueError(f"UnstructuredSTR was built for shape {self.shape}, got {tuple(W.shape)}")
        alpha = self.threshold().detach().to(W)
        return torch.sign(W) * (W.abs() + alpha)

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


def _find(module: nn.Module, name: str) -> UnstructuredSTR | None:
    if not parametrize.is_parametrized(module, name):
        return None
    return next((p for p in module.parametrizations[name] if isinstance(p, UnstructuredSTR)), None)


def unstructured(module: nn.Module, name: str = "weight", **options: Any) -> nn.Module:
    """Register :class:`UnstructuredSTR` on ``module.<name>`` and return ``module`` (the unstructured twin of
    :func:`strrnn.lowrank`; :func:`sparsify` applies it to every weight of a model).

    ``options``: ``g``, ``k``, ``s_init``, ``per_row``. Build the optimizer afterwards.

    Raises:
        ValueError: no tensor ``name`` on ``module``, or it already carries UnstructuredSTR.
    """
    attach(module, name, UnstructuredSTR, **options)
    return module


def sparse(module: nn.Module, name: str = "weight", **options: Any) -> nn.Module:
    """Deprecated name of :func:`unstructured` (removed in strrnn 0.3)."""
    warnings.warn("strrnn.sparse is deprecated, use strrnn.unstructured (same arguments)", FutureWarning,
                  stacklevel=2)
    return unstructured(module, name, **options)


def sparsify(
    model: nn.Module,
    include: Iterable[str] | Callable[[str, nn.Module], bool] | None = None,
    exclude: Iterable[str] | Callable[[str, nn.Module], bool] | None = None,
    **options: Any,
) -> nn.Module:
    """Put :class:`UnstructuredSTR` on every Conv1d/2d/3d and Linear weight and every recurrent weight of ``model``.

    Recurrent cells are modules whose class declares ``recurrent_weights`` (e.g. ``("W", "U")``).

    Args:
        model: any module; normalization layers and biases stay dense.
        include: module paths, path prefixes or ``fnmatch`` patterns (``"layer1"``, ``"layer*.0.conv1"``) or a
            predicate ``(path, module) -> bool`` (:mod:`strrnn.selection`); ``None`` means every candidate.
        exclude: patterns or predicate of layers to keep dense (e.g. ``["conv1", "fc"]``).
        options: passed to :class:`UnstructuredSTR`.

    Returns:
        ``model`` (modified in place).

    Raises:
        ValueError: nothing matched (the message lists the candidate layer paths).
    """
    chosen = [(path, m, name) for path, m, name in select_weights(model, include, exclude) if _find(m, name) is None]
    if not chosen:
        candidates = select_weights(model)
        paths = ", ".join(dict.fromkeys(p for p, _, _ in candidates)) or "none"
        raise ValueError(f"sparsify matched no layer; conv/linear/recurrent layers of this model: {paths}")
    for _, module, name in chosen:
        unstructured(module, name, **options)
    return model


def sparsity(module: nn.Module, name: str = "weight") -> float:
    """Fraction of exact zeros (0…1) in the effective ``module.<name>``."""
    with torch.no_grad():
        tensor = getattr(module, name)
        return 1.0 - float(torch.count_nonzero(tensor)) / tensor.numel()
