r"""The threshold engine shared by both STR modes.

Soft threshold operator, for a tensor :math:`x` and a threshold :math:`\alpha \ge 0`:

.. math::  S(x, \alpha) = \operatorname{sign}(x)\,\operatorname{relu}(|x| - \alpha)

STR learns :math:`\alpha` through a free parameter :math:`s` and a threshold function
:math:`\alpha = g(s)`:

* ``"sigmoid"``: :math:`g(s) = k\,\sigma(s)` — unstructured mode (weights are small; :math:`\alpha < k`);
* ``"exp"``: :math:`g(s) = k\,e^{s}` — low-rank mode (a spectrum has no natural upper bound);
* any callable ``g(s, k) -> alpha``; :func:`register_threshold_function` adds a named one.

``s`` starts very negative so that :math:`g(s) \approx 0` and training starts from the dense model.
L2 decay on ``s`` is the sparsity knob: since ``s < 0`` the decay pulls ``s`` toward 0 and raises the
threshold. Entries below the threshold receive zero gradient, so they return only if the threshold falls.

This module also builds optimizer parameter groups (:func:`param_groups`) that carry the recipe that makes
the learned budget respond to its decay strength under any optimizer; see that function's docstring.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

__all__ = [
    "soft_threshold",
    "register_threshold_function",
    "get_threshold_function",
    "threshold_functions",
    "Threshold",
    "param_groups",
    "threshold_group",
    "STR_LR",
    "STR_EPS",
]

ThresholdFunction = Callable[[torch.Tensor, float], torch.Tensor]


def soft_threshold(x: torch.Tensor, alpha: torch.Tensor | float) -> torch.Tensor:
    r"""Soft threshold :math:`\operatorname{sign}(x)\,\operatorname{relu}(|x| - \alpha)`.

    Args:
        x: any shape ``(*)``.
        alpha: threshold, a scalar or a tensor broadcastable to ``x``; must be ``>= 0``.

    Returns:
        Tensor of the shape of ``x`` with exact zeros wherever ``|x| <= alpha``. The gradient to ``x``
        is 1 above the threshold and 0 below it; the gradient to ``alpha`` is ``-sign(x)`` above it.
    """
    return torch.sign(x) * torch.relu(torch.abs(x) - alpha)


class _FusedSoftThreshold(torch.autograd.Function):
    r""":func:`soft_threshold` as one autograd node: the same values and gradients, far fewer tensors.

    Forward: :math:`y = S(x, \alpha)`, written as ``softshrink(x, α)`` (one pass; CPU, scalar ``α``) or
    ``x − clamp(x, −α, α)`` (any device, ``α`` broadcast), then ``copysign(y, x)`` so that pruned negative entries
    are −0.0 as ``sign(x)·0`` makes them. Both are exact: for :math:`|x| > \alpha` they compute :math:`x \mp \alpha`,
    which equals :math:`\operatorname{sign}(x)(|x| - \alpha)` bit for bit (round-to-nearest is symmetric), and
    :math:`|x| - \alpha > 0 \iff |x| > \alpha` in IEEE arithmetic with subnormals.

    Backward, with :math:`m = [|x| > \alpha]` (recomputed from ``x`` or from ``y ≠ 0``; nothing is stored but ``x``,
    the parameter itself, and ``y``, which the layer using it keeps for its own backward anyway):

    .. math::  \partial L/\partial x = m \odot G, \qquad
               \partial L/\partial \alpha = -\textstyle\sum_{\text{broadcast}} m \odot \operatorname{sign}(x) \odot G

    The second sum runs over the very tensor autograd's chain reduces (``sum_to_size`` of the same values), so
    the threshold's gradient matches the unfused path to the last bit, ties ``|x| = α`` included (pruned). Only
    the sign of a zero can differ, in two cases that change no value: an input of exactly −0.0 gives −0.0 (plain:
    +0.0, as ``torch.sign(-0.0)`` is +0.0), and an upstream gradient of −0.0 on a kept entry passes as −0.0 (plain:
    +0.0, after adding the zero gradient of ``sign``).

    Why: the unfused chain ``sign``, ``abs``, ``sub``, ``relu``, ``mul`` and its backward create about ten
    weight-sized tensors per use. On CPU each fresh large tensor costs page faults as well as a pass (glibc's
    malloc serves large blocks by ``mmap`` and hands them back on ``free``), and that, more than the arithmetic,
    made unstructured STR's ResNet-18 training step 1.3× dense. Here a use creates one tensor forward (``y``) and
    two backward.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        lambd = _scalar_threshold(x, alpha)
        if lambd is not None:
            out = torch.nn.functional.softshrink(x, lambd)
        else:
            out = torch.clamp(x, -alpha, alpha)
            torch.sub(x, out, out=out)
        torch.copysign(out, x, out=out)
        ctx.lambd = lambd
        ctx.alpha_shape = alpha.shape
        ctx.save_for_backward(x, out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        x, out = ctx.saved_tensors
        if ctx.lambd is not None:
            kept = torch.ops.aten.softshrink_backward(grad, x, ctx.lambd)  # G where |x| > λ, else 0
        else:
            kept = out.abs()  # > 0 exactly where kept; overwritten in place by the masked gradient
            torch.ops.aten.threshold_backward.grad_input(grad, kept, 0, grad_input=kept)
        grad_alpha = None
        if ctx.needs_input_grad[1]:
            # sign(y) = sign(x) on kept entries and 0 elsewhere, so this is autograd's relu-backward tensor
            signed = torch.sign(out).mul_(kept)
            grad_alpha = signed.sum_to_size(ctx.alpha_shape).neg_()
        return (kept if ctx.needs_input_grad[0] else None), grad_alpha


def _scalar_threshold(x: torch.Tensor, alpha: torch.Tensor) -> float | None:
    """``α`` as a Python float where ``softshrink`` can apply it (CPU, one threshold), else ``None``.

    Reading the float is free on CPU; on an accelerator it would wait for the device, so there ``None``.
    """
    return float(alpha) if x.device.type == "cpu" and alpha.numel() == 1 else None


def _fusable(x: torch.Tensor, alpha: torch.Tensor | float) -> bool:
    """Whether :class:`_FusedSoftThreshold` computes exactly what :func:`soft_threshold` would."""
    if not (isinstance(alpha, torch.Tensor) and x.is_floating_point() and alpha.dtype == x.dtype
            and alpha.device == x.device and alpha.dim() <= x.dim()):
        return False
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return False  # they record / fuse the plain ops themselves; a Python autograd node would only get in the way
    try:
        if torch.broadcast_shapes(x.shape, alpha.shape) != x.shape:
            return False
    except RuntimeError:
        return False  # not broadcastable: let the plain formula raise its usual error
    # A negative (or NaN) threshold breaks the contract; the plain formula defines the result. Checked where it is
    # free (CPU: no device wait); on an accelerator g's contract (g >= 0) is trusted.
    return x.device.type != "cpu" or not bool((alpha < 0).any() | alpha.isnan().any())


def soft_threshold_fused(x: torch.Tensor, alpha: torch.Tensor | float) -> torch.Tensor:
    r""":func:`soft_threshold` with the same values and gradients, computed by one autograd node.

    ``alpha``: a tensor ``>= 0`` of ``x``'s dtype and device, broadcastable to ``x`` without enlarging it. The
    plain formula is used instead wherever the fused node does not apply: under ``torch.jit.trace`` / ONNX export
    and ``torch.compile`` (which record and fuse the plain ops themselves), a negative or NaN threshold on CPU
    (outside the contract), or ``alpha`` of another type, dtype, device or shape. Used by
    :class:`strrnn.UnstructuredSTR`.
    """
    if not _fusable(x, alpha):
        return soft_threshold(x, alpha)
    return _FusedSoftThreshold.apply(x, alpha)


def _sigmoid(s: torch.Tensor, k: float) -> torch.Tensor:
    return k * torch.sigmoid(s)


def _exp(s: torch.Tensor, k: float) -> torch.Tensor:
    return k * torch.exp(s)


_REGISTRY: dict[str, ThresholdFunction] = {"sigmoid": _sigmoid, "exp": _exp}


def register_threshold_function(name: str, fn: ThresholdFunction) -> None:
    """Register ``fn(s, k) -> alpha`` under ``name`` so that ``g=name`` can select it.

    ``fn`` must map a tensor ``s`` of any shape to a non-negative tensor of the same shape.
    """
    if not callable(fn):
        raise ValueError(f"threshold function {name!r} must be callable, got {type(fn).__name__}")
    _REGISTRY[name] = fn


def threshold_functions() -> list[str]:
    """Names of the registered threshold functions ``g``."""
    return sorted(_REGISTRY)


def get_threshold_function(g: str | ThresholdFunction) -> ThresholdFunction:
    """Resolve ``g`` (a registered name or a callable ``g(s, k)``) to a callable.

    Raises:
        ValueError: ``g`` is an unknown name; the message lists the registered ones.
    """
    if callable(g):
        return g
    if isinstance(g, str) and g in _REGISTRY:
        return _REGISTRY[g]
    raise ValueError(
        f"unknown threshold function g={g!r}; registered: {', '.join(threshold_functions())} "
        "(or pass a callable g(s, k) -> alpha)"
    )


class Threshold(nn.Module):
    r"""A learnable threshold :math:`\alpha = g(s)` with ``g`` scaled by ``k``.

    Args:
        shape: shape of ``s``; ``()`` (default) is one threshold for the whole tensor, ``(rows, 1, ...)``
            gives one threshold per row (it must broadcast against the thresholded tensor).
        g: ``"exp"``, ``"sigmoid"``, another registered name, or a callable ``g(s, k)``.
        k: scale of ``g`` (``k = 1`` in the paper).
        s_init: initial value of ``s``; very negative so that ``g(s_init) ≈ 0``.

    Calling the module returns ``alpha`` with the shape of ``s``.
    """

    def __init__(
        self,
        shape: tuple[int, ...] = (),
        g: str | ThresholdFunction = "exp",
        k: float = 1.0,
        s_init: float = -10.0,
    ) -> None:
        super().__init__()
        if not (isinstance(k, (int, float)) and math.isfinite(k) and k > 0):
            raise ValueError(f"threshold scale k must be a positive finite number, got k={k!r}")
        if not (isinstance(s_init, (int, float)) and math.isfinite(s_init)):
            raise ValueError(f"s_init must be a finite number, got s_init={s_init!r}")
        self.g_name = g if isinstance(g, str) else getattr(g, "__name__", "callable")
        self.g = get_threshold_function(g)
        self.k = float(k)
        self.s = nn.Parameter(torch.full(tuple(shape), float(s_init)))

    def forward(self) -> torch.Tensor:
        """Return ``alpha = g(s, k)`` (shape of ``s``)."""
        return self.g(self.s, self.k)

    @torch.no_grad()
    def set_alpha(self, alpha: float | torch.Tensor) -> None:
        """Set ``s`` so that ``g(s) = alpha`` (``exp``: ``s = log(alpha / k)``; ``sigmoid``: ``logit(alpha / k)``).

        Used by schedules that drive the threshold instead of learning it. ``alpha`` is clamped into ``g``'s range.

        Raises:
            ValueError: ``g`` is neither ``exp`` nor ``sigmoid`` (its inverse is unknown).
        """
        ratio = torch.as_tensor(alpha, dtype=self.s.dtype, device=self.s.device) / self.k
        tiny = torch.finfo(self.s.dtype).tiny
        if self.g is _exp:
            value = torch.log(ratio.clamp_min(tiny))
        elif self.g is _sigmoid:
            value = torch.logit(ratio.clamp(tiny, 1 - 1e-7))
        else:
            raise ValueError(f"set_alpha needs g='exp' or 'sigmoid' (the inverse of {self.g_name!r} is unknown)")
        self.s.copy_(value.expand_as(self.s))

    def extra_repr(self) -> str:
        return f"g={self.g_name}, k={self.k}, shape={tuple(self.s.shape)}"


# Default learning rate and Adam epsilon of the STR groups (thresholds and low-rank spectra).
# Under Adam the update is lr * m / (sqrt(v) + eps). With eps much larger than the gradients of these groups
# (decay gradients are λ·|s| ~ 1e-2), the update becomes ≈ (lr / eps) * m: linear in the gradient like the
# paper's SGD step, so the threshold moves in proportion to its decay λ instead of by ≈ lr per step whatever
# λ is. lr / eps = 0.3 matches SGD with lr 0.03 and momentum 0.9 (lr / (1 - momentum) = 0.3), which is also
# what an SGD optimizer gives these groups (SGD ignores eps). Measured on FSDD (benchmarks/README.md): with
# lr / eps = 3 the ranks settle within 30 epochs into noisy equilibria that are not monotone in λ; at 0.3 the
# ranks fall gradually and monotonically with λ over 100 epochs.
STR_LR = 0.03
STR_EPS = 0.1

_NORM_TYPES = (
    nn.modules.batchnorm._NormBase,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)


def attach(module: nn.Module, name: str, parametrization_type: type[nn.Module], **options) -> nn.Module:
    """Register ``parametrization_type(shape, **options)`` on ``module.<name>``; return the parametrization.

    The parametrization takes the tensor's device and dtype. Shared by :func:`strrnn.lowrank` and
    :func:`strrnn.sparse`.

    Raises:
        ValueError: ``module`` has no tensor ``name``; it already carries an STR parametrization (low-rank and
            unstructured STR do not stack: each owns the tensor's threshold); or the new parametrization has
            several originals (``multi_original``) and the tensor is already parametrized, which
            ``torch.nn.utils.parametrize`` cannot stack.
    """
    from torch.nn.utils import parametrize

    tensor = getattr(module, name, None)
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"{type(module).__name__} has no tensor named {name!r}")
    if parametrize.is_parametrized(module, name):
        existing = [type(p).__name__ for p in module.parametrizations[name]]
        where = f"{type(module).__name__.removeprefix('Parametrized')}.{name}"
        if any(getattr(p, "is_str", False) for p in module.parametrizations[name]):
            raise ValueError(f"{where} already carries {', '.join(existing)}; one tensor takes one STR "
                             "parametrization (remove it first with torch.nn.utils.parametrize."
                             "remove_parametrizations, or parametrize another tensor)")
        if getattr(parametrization_type, "multi_original", False):
            raise ValueError(f"{where} already carries {', '.join(existing)}; {parametrization_type.__name__} "
                             "replaces the tensor by several factors and must be its only parametrization")
    parametrization = parametrization_type(tensor.shape, **options).to(device=tensor.device, dtype=tensor.dtype)
    parametrize.register_parametrization(module, name, parametrization)
    return parametrization


def _str_parameters(model: nn.Module) -> tuple[dict[int, str], bool]:
    """Map id(parameter) -> kind ("threshold" or "spectrum") for every STR-owned parameter; and whether every
    thresholded spectrum has a threshold relative to its own scale (``relative``)."""
    from torch.nn.utils import parametrize

    kinds: dict[int, str] = {}
    relative = []
    for module in model.modules():
        if isinstance(module, Threshold):
            kinds[id(module.s)] = "threshold"
        if parametrize.is_parametrized(module):
            for plist in module.parametrizations.values():
                for p in plist:
                    for index in getattr(p, "spectrum_original_indices", ()):
                        original = getattr(plist, f"original{index}")
                        if original.requires_grad:
                            kinds[id(original)] = "spectrum"
                            if getattr(p, "threshold", None) is not None:
                                relative.append(bool(getattr(p, "relative", False)))
    return kinds, bool(relative) and all(relative)


def param_groups(
    model: nn.Module,
    weight_decay: float = 0.0,
    threshold_decay: float | None = None,
    threshold_lr: float | None = STR_LR,
    threshold_eps: float | None = STR_EPS,
    no_decay: Iterable[str] = ("bias", "norm"),
    lr: float | None = None,
    spectrum_decay: float | None = None,
) -> list[dict]:
    r"""Optimizer parameter groups that make STR's learned budget respond to its strength.

    Returns up to four groups (empty ones are dropped), each a dict with ``name`` and ``params``:

    * ``"weights"``: every other trainable parameter, with ``weight_decay``;
    * ``"no_decay"``: biases and normalization parameters (matched by module type, or by a name component
      in ``no_decay``), weight decay 0;
    * ``"threshold"``: STR thresholds ``s``, with ``threshold_decay`` — the sparsity knob (default
      ``weight_decay``) — learning rate ``threshold_lr`` and Adam ``eps`` ``threshold_eps``;
    * ``"spectrum"``: low-rank spectra ``m``, same learning rate and eps, with ``spectrum_decay``. By default it is
      what the threshold form needs: with the paper's absolute threshold ``α = k·e^s`` the spectrum decays with the
      threshold (``threshold_decay``; ``α`` saturates at ``k`` as decay pulls ``s`` to 0, so undecayed spectra
      would simply outgrow it); with thresholds relative to the spectrum's scale (``LowRankSTR(relative=True)``,
      every one of them) it keeps the weights' decay, because the decay would only shrink the directions that
      survive while ``s`` alone decides the rank.

    Why these groups have their own lr and eps: the paper updates ``s`` by SGD, where the step is proportional
    to the decay gradient ``λ·s``, so a larger λ cuts more. Under Adam with its default eps the normalized step
    is ≈ lr whatever λ is, and at small-data step counts no rank is ever cut. With ``eps = threshold_eps``
    (0.1) Adam's step in these groups is ≈ ``(threshold_lr / threshold_eps)·m̂`` — an SGD step with
    momentum-like averaging, saturating at ≈ ``threshold_lr`` for large gradients — and SGD with momentum 0.9
    gives the same ``threshold_lr / (1 - 0.9)``. Pass ``threshold_lr=None, threshold_eps=None`` to inherit the
    optimizer's own settings.

    Args:
        model: a module carrying STR parametrizations (or none).
        weight_decay: L2 decay λ for weights.
        threshold_decay: decay of thresholds ``s``; ``None`` means ``weight_decay``.
        threshold_lr: learning rate of spectra and thresholds (``None``: the optimizer's).
        threshold_eps: Adam/AdamW ``eps`` of spectra and thresholds (ignored by SGD; ``None``: the optimizer's).
        no_decay: name components (lower-case substrings of a parameter's dotted name) exempt from decay.
        lr: learning rate of the weight groups (``None``: the optimizer's).
        spectrum_decay: decay of low-rank spectra ``m``; ``None``: as the threshold form needs (see above).

    Returns:
        list of parameter-group dicts, ready for ``torch.optim.Adam(groups, lr=...)`` or ``SGD``.
        Build the optimizer after registering every parametrization: registering replaces parameters.
    """
    for label, value in (("weight_decay", weight_decay), ("threshold_decay", threshold_decay),
                         ("spectrum_decay", spectrum_decay)):
        if value is not None and (not math.isfinite(value) or value < 0):
            raise ValueError(f"{label} must be a finite number >= 0, got {label}={value!r}")
    for label, value in (("threshold_lr", threshold_lr), ("threshold_eps", threshold_eps), ("lr", lr)):
        if value is not None and (not math.isfinite(value) or value <= 0):
            raise ValueError(f"{label} must be a positive finite number or None, got {label}={value!r}")
    no_decay = tuple(n.lower() for n in no_decay)
    str_kinds, relative = _str_parameters(model)
    exempt: set[int] = set()
    for module in model.modules():
        if isinstance(module, _NORM_TYPES):
            exempt.update(id(p) for p in module.parameters(recurse=False))

    weights, dense_exempt, spectra, thresholds = [], [], [], []
    seen: set[int] = set()
    for name, param in model.named_parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        kind = str_kinds.get(id(param))
        if kind == "threshold":
            thresholds.append(param)
        elif kind == "spectrum":
            spectra.append(param)
        elif id(param) in exempt or any(t in part for part in name.lower().split(".") for t in no_decay):
            dense_exempt.append(param)
        else:
            weights.append(param)

    def group(name: str, params: list, decay: float, **extra) -> dict:
        out = {"name": name, "params": params, "weight_decay": decay}
        out.update({k: v for k, v in extra.items() if v is not None})
        return out

    str_options = {"lr": threshold_lr, "eps": threshold_eps}
    str_decay = weight_decay if threshold_decay is None else threshold_decay
    if spectrum_decay is None:
        spectrum_decay = weight_decay if relative else str_decay
    groups = [
        group("weights", weights, weight_decay, lr=lr),
        group("no_decay", dense_exempt, 0.0, lr=lr),
        group("spectrum", spectra, spectrum_decay, **str_options),
        group("threshold", thresholds, str_decay, **str_options),
    ]
    return [g for g in groups if g["params"]]


def threshold_group(optimizer: torch.optim.Optimizer | None) -> dict | None:
    """The ``"threshold"`` parameter group of :func:`param_groups` (the thresholds ``s`` only), if any."""
    if optimizer is None:
        return None
    return next((g for g in optimizer.param_groups if g.get("name") == "threshold"), None)
