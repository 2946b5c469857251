r"""Low-rank STR: learn the rank of a weight matrix by soft-thresholding its spectrum.

For a weight :math:`W` of shape ``(out, in)`` and inner size :math:`r` (``min(out, in)`` or ``max_rank``):

.. math::  W = A\,\operatorname{diag}\big(S(m, g(s))\big)\,B, \qquad
           A \in \mathbb{R}^{out \times r},\; m \in \mathbb{R}^{r},\; B \in \mathbb{R}^{r \times in}

with :math:`S(m, \alpha) = \operatorname{sign}(m)\operatorname{relu}(|m| - \alpha)` and, by default,
:math:`\alpha = k e^{s}` (the paper's absolute threshold). With ``relative=True`` the threshold is taken relative to
the spectrum's own scale, :math:`\alpha = k e^{s} \max_i |m_i|` (the maximum without gradient): growing or
shrinking the whole spectrum then moves no rank, only ``s`` does — with orthogonal factors :math:`\max_i |m_i|` is
the spectral norm, so :math:`e^s` is the fraction of the largest singular value below which directions are cut.
The learned rank is :math:`\operatorname{nnz}(S(m, \alpha))`.

* ``factors="free"`` (the paper's form, STR §4.2.1): ``A``, ``B`` unconstrained, ``m`` starts at ones.
* ``factors="orthogonal"``: ``A`` and ``B`` are kept orthonormal (columns of ``A``, rows of ``B``), so :math:`|S(m)|`
  are exactly the singular values of ``W`` and the rank is exact. By default the forward pass orthonormalizes them
  with a QR factorization inside the graph (the gradient flows through it). With ``retract=True`` they are kept so by
  a *retraction* instead: whenever the factors changed since the last forward pass (an optimizer step, a load), they
  are re-orthonormalized in place by a QR without gradient, and the forward pass multiplies by ``A`` and ``B``
  themselves (the optimizer's step is projected back onto the orthonormal matrices). That costs one QR per changed
  factor and no QR backward; every read of the spectrum still sees exact singular values. Where the factors cannot be
  changed in place (they are not leaves, or under ``torch.jit.trace`` / ``torch.compile``) the QR runs in the
  graph.

``right_inverse(W)`` is the (truncated) SVD :math:`W = U\Sigma V^\top`: free factors take
:math:`A = U\sqrt\Sigma`, :math:`B = \sqrt\Sigma V^\top`, :math:`m = 1 + \alpha`; orthogonal factors take
:math:`A = U`, :math:`B = V^\top`, :math:`m = \sigma + \alpha`. Adding :math:`\alpha` undoes the soft threshold,
so a dense (pretrained) weight is reproduced exactly at step 0 when ``r = min(out, in)``.

``min_rank`` (default 1) protects the largest ``min_rank`` spectrum entries: the threshold is capped just at
the ``(min_rank + 1)``-th largest ``|m|``, so training can never collapse a matrix to rank 0.

``threshold=False`` gives fixed-rank ("vanilla") factorization ``W = A·B`` (``m`` frozen at one).

The parametrization follows :mod:`torch.nn.utils.parametrize`; registered on ``module.weight`` it stores
``parametrizations.weight.original0`` (``A``), ``original1`` (``m``), ``original2`` (``B``) and the
threshold's ``s`` at ``parametrizations.weight.0.threshold.s``. Build optimizers after registering it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import parametrize

from .factored import factored_is_cheaper, low_rank_params, originals
from .threshold import Threshold, attach, soft_threshold

__all__ = [
    "LowRankSTR",
    "LowRankLinear",
    "lowrank",
    "lowrank_rnn",
    "low_rank_factors",
    "spectrum",
    "rank",
    "FACTOR_KINDS",
    "originals",
    "low_rank_params",
    "factored_is_cheaper",
]

FACTOR_KINDS = ("free", "orthogonal")


_LINALG_DTYPES = (torch.float32, torch.float64, torch.complex64, torch.complex128)


def _linalg_dtype(x: torch.Tensor) -> torch.Tensor:
    """``x`` in a dtype QR/SVD support: half precision (float16, bfloat16) is computed in float32."""
    return x if x.dtype in _LINALG_DTYPES else x.float()


def _retractable(A: torch.Tensor, B: torch.Tensor) -> bool:
    """Whether the orthogonal factors may be re-orthonormalized in place: leaves (the parametrization's own
    originals), outside tracing and compiling (which must see the orthonormalization as graph ops)."""
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return False
    return A.is_leaf and B.is_leaf


def _orthonormal_columns(x: torch.Tensor) -> torch.Tensor:
    """Q factor of ``x`` (n, r), n >= r, with the sign convention diag(R) >= 0 (so Q(Q) = Q)."""
    q, r = torch.linalg.qr(_linalg_dtype(x))
    signs = torch.where(torch.diagonal(r) >= 0, 1.0, -1.0).to(q.dtype)
    return (q * signs).to(x.dtype)


class LowRankSTR(nn.Module):
    r"""Parametrization ``(A, m, B) -> A·diag(S(m, g(s)))·B`` of a weight of shape ``(out, in)``.

    Args:
        shape: shape of the weight, ``(out, in)``; a 4-D conv weight ``(out, c, kh, kw)`` only with
            ``flatten=True`` (treated as ``(out, c·kh·kw)``).
        max_rank: inner size ``r``; default ``min(out, in)``.
        factors: ``"free"`` or ``"orthogonal"``.
        g, k, s_init: threshold function, its scale and the initial ``s`` (see :class:`strrnn.Threshold`).
        min_rank: number of largest spectrum entries the threshold can never cut (0 disables).
        threshold: ``False`` for fixed-rank factorization without STR.
        flatten: accept weights of more than two dimensions by flattening all but the first.
        hard: cut with a hard threshold, ``m·1[|m| > alpha]``: surviving entries keep their value (no shrinkage;
            ``s`` then gets no gradient, so it must be driven — :class:`strrnn.SpectralGMP` sets this).
        relative: threshold relative to the spectrum's scale, ``alpha = g(s)·max|m|`` (see the module docstring).
        retract: orthogonal factors kept by an in-place retraction instead of a QR inside the graph (see the module
            docstring): cheaper, but the optimizer then steps the factors themselves, which changes how fast a
            learned threshold cuts (measured: fewer cuts at the same decay); off by default.
    """

    # index of the spectrum among the originals, used by :func:`strrnn.param_groups`
    spectrum_original_indices = (1,)
    is_str = True  # an STR parametrization: it owns the tensor's threshold (see strrnn.threshold.attach)
    multi_original = True  # right_inverse returns (A, m, B): cannot stack on another parametrization

    def __init__(
        self,
        shape: Iterable[int],
        max_rank: int | None = None,
        factors: str = "free",
        g: str | Callable = "exp",
        k: float = 1.0,
        s_init: float = -10.0,
        min_rank: int = 1,
        threshold: bool = True,
        flatten: bool = False,
        hard: bool = False,
        relative: bool = False,
        retract: bool = False,
    ) -> None:
        super().__init__()
        shape = tuple(int(d) for d in shape)
        if len(shape) != 2 and not (flatten and len(shape) > 2):
            hint = " (pass flatten=True to factor it as (out, in·kh·kw))" if len(shape) > 2 else ""
            raise ValueError(f"LowRankSTR needs a 2-D weight (out, in); got shape {shape}{hint}")
        if any(d <= 0 for d in shape):
            raise ValueError(f"LowRankSTR needs a non-empty weight; got shape {shape}")
        if factors not in FACTOR_KINDS:
            raise ValueError(f"unknown factors={factors!r}; choose one of {', '.join(FACTOR_KINDS)}")
        self.shape = shape
        self.matrix_shape = (shape[0], math.prod(shape[1:]))
        full_rank = min(self.matrix_shape)
        if max_rank is None:
            max_rank = full_rank
        if not isinstance(max_rank, int) or not 1 <= max_rank <= full_rank:
            raise ValueError(
                f"max_rank must be an integer in [1, {full_rank}] for a weight of shape {shape}, "
                f"got max_rank={max_rank!r}"
            )
        if not isinstance(min_rank, int) or not 0 <= min_rank <= max_rank:
            raise ValueError(f"min_rank must be an integer in [0, max_rank={max_rank}], got min_rank={min_rank!r}")
        self.max_rank = max_rank
        self.factor_kind = factors
        # (floor, cap) on the learned rank: a buffer, so that a rank frozen by budget control is checkpointed
        self.register_buffer("rank_limits", torch.tensor([min_rank, max_rank], dtype=torch.long))
        self.threshold = Threshold((), g=g, k=k, s_init=s_init) if threshold else None
        self.hard = bool(hard)
        self.relative = bool(relative)
        self.retract = bool(retract)
        # after release(): W = A·diag(mask)·B with plain (free) factors and no threshold (buffers: checkpointed)
        self.register_buffer("released", torch.zeros((), dtype=torch.bool))
        self.register_buffer("release_mask", torch.zeros(max_rank))
        self._is_released = False  # a Python copy of `released`: no device sync per forward
        self.register_buffer("shrink_buffer", torch.ones(()))
        self._shrink = 1.0  # a Python copy of shrink_buffer, likewise
        self._retracted: tuple | None = None  # (ids, versions) of the factors as last re-orthonormalized

    @property
    def is_released(self) -> bool:
        """Whether :meth:`release` turned the tensor into plain rank-``r`` factors (no threshold, no spectrum)."""
        return self._is_released

    @property
    def min_rank(self) -> int:
        """Number of largest spectrum entries the threshold can never cut."""
        return int(self.rank_limits[0])

    @property
    def rank_cap(self) -> int:
        """Most spectrum entries that may survive (``max_rank`` unless budget control lowered it)."""
        return int(self.rank_limits[1])

    def set_rank_limits(self, floor: int | None = None, cap: int | None = None) -> None:
        """Bound the learned rank to ``[floor, cap]``; ``freeze_rank(r)`` is ``set_rank_limits(r, r)``.

        The threshold is clamped between the ``(cap+1)``-th and the ``(floor+1)``-th largest ``|m|``, so the
        bounds hold whatever ``s`` does (ties between spectrum entries aside).
        """
        floor = self.min_rank if floor is None else int(floor)
        cap = self.rank_cap if cap is None else int(cap)
        if not 0 <= floor <= cap <= self.max_rank:
            raise ValueError(f"rank limits must satisfy 0 <= floor <= cap <= {self.max_rank}, got ({floor}, {cap})")
        self.rank_limits.copy_(torch.tensor([floor, cap]))

    def freeze_rank(self, rank: int) -> None:
        """Fix the learned rank at ``rank``: exactly the ``rank`` largest spectrum entries survive."""
        self.set_rank_limits(rank, rank)

    # -- the math ---------------------------------------------------------------------------------------
    def alpha(self, m: torch.Tensor) -> torch.Tensor:
        """Effective threshold for spectrum ``m`` (r,): ``g(s)`` (times ``max|m|`` when ``relative``) clamped so the
        rank stays within its limits."""
        if self.threshold is None:
            return m.new_zeros(())
        return self.clamp_to_rank_limits(self.raw_alpha(m), m.detach().abs())

    def raw_alpha(self, m: torch.Tensor) -> torch.Tensor:
        """The threshold before the rank limits: ``g(s)``, times ``max|m|`` (no gradient) when ``relative``."""
        alpha = self.threshold()
        return alpha * m.detach().abs().max() if self.relative else alpha

    def clamp_to_rank_limits(self, alpha: torch.Tensor, magnitudes: torch.Tensor) -> torch.Tensor:
        """Clamp a threshold ``alpha`` (scalar) against ``magnitudes`` (r,) — the values it is compared with —
        so that between ``min_rank`` and ``rank_cap`` of them survive (ties aside)."""
        floor, cap = self.min_rank, self.rank_cap
        if floor >= magnitudes.numel():
            # everything survives; 0·alpha keeps s in the graph (DistributedDataParallel needs every parameter used)
            return 0.0 * alpha
        magnitudes = torch.sort(magnitudes, descending=True).values
        if floor > 0:
            # a threshold at the (floor+1)-th largest |m| keeps exactly the top `floor` entries; when that entry
            # ties with the floor-th (free factors start with all m equal), stay just below the tie so the
            # protected entries keep a nonzero value and a gradient (the tied ones survive with them)
            ceiling = magnitudes[floor]
            if magnitudes[floor - 1] <= ceiling:
                ceiling = magnitudes[floor - 1] * (1.0 - 1e-3)
            alpha = torch.minimum(alpha, ceiling)
        if cap < magnitudes.numel():
            alpha = torch.maximum(alpha, magnitudes[cap])
        return alpha

    def thresholded(self, m: torch.Tensor) -> torch.Tensor:
        """The learned spectrum ``S(m, alpha)`` (r,), exact zeros for cut entries (after :meth:`release`: the
        0/1 mask of the kept directions, whose scale now lives in the factors)."""
        if self._is_released:
            # m and s no longer shape W, but stay in the graph with zero gradient: DistributedDataParallel
            # requires every parameter to receive a gradient (without find_unused_parameters)
            unused = 0.0 * m + (0.0 * self.threshold() if self.threshold is not None else 0.0)
            return self.release_mask.to(m.dtype) + unused
        if self.threshold is None:
            return m
        if self.hard:
            alpha = self.alpha(m)
            # s is driven, not learned; it stays in the graph with zero gradient for DistributedDataParallel
            return m * (m.abs() > alpha) + 0.0 * alpha
        alpha = self.alpha(m)
        if self._shrink == 1.0:
            return soft_threshold(m, alpha)
        # S(m) + (1 - shrink)·alpha·sign(m) on the kept entries: they are shrunk by shrink·alpha only
        return soft_threshold(m, alpha) + (1.0 - self._shrink) * alpha * torch.sign(m) * (m.abs() > alpha)

    @property
    def shrink(self) -> float:
        """How much of the threshold the kept entries lose: 1 (the soft threshold, ``|m| - alpha``) down to 0 (they
        keep ``|m|``); the cut entries are the same either way. :class:`strrnn.STRRecipe` lowers it once the ranks
        are frozen (``debias``)."""
        return self._shrink

    def set_shrink(self, value: float) -> None:
        """Set :attr:`shrink` in ``[0, 1]`` (a buffer: checkpointed with the model)."""
        if not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"shrink must lie in [0, 1], got {value!r}")
        self.shrink_buffer.fill_(float(value))
        self._shrink = float(value)

    def factors(
        self, A: torch.Tensor, m: torch.Tensor, B: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(left (out, r), spectrum (r,), right (r, in))`` with ``W = left·diag(spectrum)·right``.

        Differentiable; the runner of a recurrent cell uses it to multiply through the factors when that is
        cheaper than materializing ``W``.
        """
        if self.factor_kind == "orthogonal" and not self._is_released:
            if self.retract and _retractable(A, B):
                self._retract(A, B)
            else:  # not ours to change in place: orthonormalize inside the graph
                A = _orthonormal_columns(A)
                B = _orthonormal_columns(B.mT).mT
        return A, self.thresholded(m), B

    @torch.no_grad()
    def _retract(self, A: torch.Tensor, B: torch.Tensor) -> None:
        """Re-orthonormalize ``A`` (columns) and ``B`` (rows) in place if they changed since the last retraction."""
        seen = (id(A), A._version, id(B), B._version)
        if seen == self._retracted:
            return
        A.copy_(_orthonormal_columns(A))
        B.copy_(_orthonormal_columns(B.mT).mT)
        self._retracted = (id(A), A._version, id(B), B._version)

    @torch.no_grad()
    def release(self, A: torch.Tensor, m: torch.Tensor, B: torch.Tensor) -> int:
        r"""Freeze the learned rank and debias: rewrite the factors in place as plain rank-``r`` factors.

        The current weight :math:`W = A\,\mathrm{diag}(S(m))\,B` (rank ``r``) is re-factored by its SVD,
        :math:`A_{:,:r} = U\sqrt\Sigma`, :math:`B_{:r} = \sqrt\Sigma V^\top` (zero elsewhere), and from then on
        ``W = A·diag(mask)·B`` with free factors: the threshold no longer shrinks the surviving directions, the
        orthogonality constraint is lifted and ``m`` and ``s`` no longer act (zero gradient) — training continues like
        fixed-rank training at rank ``r`` from the current weight. ``W`` is unchanged at this step. Parameters
        keep their identity (an optimizer keeps working); reset their optimizer state, as
        the recipes (:class:`strrnn.rank_budget.RankRecipe`) do. Returns ``r``.
        """
        left, spec, right = self.factors(A, m, B)
        r = max(int(torch.count_nonzero(spec)), 1)
        matrix = (left * spec) @ right
        U, S, Vh = torch.linalg.svd(_linalg_dtype(matrix), full_matrices=False)
        root = S[:r].sqrt()
        A.zero_()
        B.zero_()
        A[:, :r] = (U[:, :r] * root).to(A.dtype)
        B[:r] = (root[:, None] * Vh[:r]).to(B.dtype)
        self.release_mask.zero_()
        self.release_mask[:r] = 1.0
        self.released.fill_(True)
        self._is_released = True
        self.set_rank_limits(r, r)
        return r

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        for key, default in (("released", self.released), ("release_mask", self.release_mask),
                             ("shrink_buffer", torch.ones(()))):
            state_dict.setdefault(prefix + key, default.clone())  # checkpoints written before these existed
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        self._is_released = bool(self.released)
        self._shrink = float(self.shrink_buffer)

    def forward(self, A: torch.Tensor, m: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        """``(A (out, r), m (r,), B (r, in)) -> W`` of the registered shape."""
        left, spec, right = self.factors(A, m, B)
        return ((left * spec) @ right).reshape(self.shape)

    def right_inverse(self, W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``W`` (registered shape) -> ``(A, m, B)`` from its truncated SVD (exact when ``r = min(out, in)``)."""
        if tuple(W.shape) != self.shape:
            raise ValueError(f"LowRankSTR was built for shape {self.shape}, got a weight of shape {tuple(W.shape)}")
        matrix = W.detach().reshape(self.matrix_shape)
        U, S, Vh = (t.to(W.dtype) for t in torch.linalg.svd(_linalg_dtype(matrix), full_matrices=False))
        r = self.max_rank
        U, S, Vh = U[:, :r], S[:r], Vh[:r]
        cuts = self.threshold is not None and self.min_rank < r
        alpha = self.threshold().detach().to(W) if cuts else 0.0
        if cuts and self.relative:
            # m = S + alpha with alpha = g(s)·max(m) = g(s)·(S_max + alpha): alpha = g(s)·S_max / (1 - g(s))
            alpha = alpha * S.max() / (1.0 - alpha).clamp_min(torch.finfo(W.dtype).eps)
        if self.factor_kind == "free":
            root = S.sqrt()
            return (U * root).contiguous(), torch.ones_like(S) + alpha, (root[:, None] * Vh).contiguous()
        return U.contiguous(), S + alpha, Vh.contiguous()

    # -- accounting -------------------------------------------------------------------------------------
    def rank_of(self, m: torch.Tensor) -> int:
        """Number of nonzero entries of ``S(m)``: the rank this parametrization gives."""
        with torch.no_grad():
            return int(torch.count_nonzero(self.thresholded(m)))

    def extra_repr(self) -> str:
        kind = "off" if self.threshold is None else "hard" if self.hard else "on"
        if self.threshold is not None and self.relative:
            kind += ", relative to max|m|"
        return (
            f"shape={self.shape}, max_rank={self.max_rank}, factors={self.factor_kind}, "
            f"min_rank={self.min_rank}, threshold={kind}"
            + (f", released at rank {self.rank_cap}" if self._is_released else "")
        )


def _find(module: nn.Module, name: str) -> LowRankSTR | None:
    if not parametrize.is_parametrized(module, name):
        return None
    for p in module.parametrizations[name]:
        if isinstance(p, LowRankSTR):
            return p
    return None


def low_rank_factors(module: nn.Module, name: str = "weight"):
    """``(left (out, r), spectrum (r,), right (r, in))`` of a LowRankSTR tensor, or ``None`` if it has none.

    Differentiable (use it inside the forward pass).
    """
    p = _find(module, name)
    if p is None:
        return None
    return p.factors(*originals(module, name))


def spectrum(module: nn.Module, name: str = "weight") -> torch.Tensor:
    """The learned spectrum ``S(m)`` (r,) of ``module.<name>`` (detached).

    Raises:
        ValueError: the tensor carries no LowRankSTR.
    """
    p = _find(module, name)
    if p is None:
        raise ValueError(f"{type(module).__name__}.{name} carries no LowRankSTR parametrization")
    with torch.no_grad():
        return p.thresholded(originals(module, name)[1]).detach().clone()


def rank(module: nn.Module, name: str = "weight") -> int:
    """The learned rank (nonzeros of the spectrum) of ``module.<name>``."""
    return int(torch.count_nonzero(spectrum(module, name)))


def lowrank(module: nn.Module, name: str = "weight", **options: Any) -> nn.Module:
    """Register :class:`LowRankSTR` on ``module.<name>`` and return ``module``.

    ``options`` are :class:`LowRankSTR`'s (``max_rank``, ``factors``, ``g``, ``k``, ``s_init``, ``min_rank``,
    ``threshold``, ``flatten``, ``hard``, ``relative``). The current value of the tensor is kept (``right_inverse`` =
    SVD), and the new parameters take its device and dtype. Build the optimizer afterwards.

    Raises:
        ValueError: ``module`` has no tensor ``name``, it is already low-rank, or its shape is not 2-D.
    """
    parametrization = attach(module, name, LowRankSTR, **options)
    if parametrization.threshold is None:
        # fixed rank: the spectrum stays at one, the factors carry the scale
        module.parametrizations[name].original1.requires_grad_(False)
    return module


def lowrank_rnn(model: nn.Module, weights: Iterable[str] = ("W", "U"), **options: Any) -> nn.Module:
    """Apply :func:`lowrank` to the named weights of every recurrent cell in ``model``; return ``model``.

    A recurrent cell is any module whose class declares ``recurrent_weights`` (e.g. ``("W", "U")``). An option
    may be a dict keyed by weight name to differ per weight, e.g. ``max_rank={"W": 12, "U": 40}``.

    Raises:
        ValueError: no recurrent cell is found, or a name in ``weights`` is not a recurrent weight of any cell.
    """
    weights = tuple(weights)
    cells = [m for m in model.modules() if getattr(type(m), "recurrent_weights", None)]
    if not cells:
        raise ValueError(
            f"{type(model).__name__} contains no recurrent cell (a module whose class declares "
            "recurrent_weights); use strrnn.lowrank(module, name) for other modules"
        )
    known = {w for cell in cells for w in type(cell).recurrent_weights}
    unknown = [w for w in weights if w not in known]
    if unknown:
        raise ValueError(f"weights {unknown} are not recurrent weights of this model; available: {sorted(known)}")
    for cell in cells:
        for w in weights:
            if w in type(cell).recurrent_weights:
                per_weight = {k: (v[w] if isinstance(v, dict) else v) for k, v in options.items()}
                lowrank(cell, w, **per_weight)
    return model


class LowRankLinear(nn.Module):
    """A linear layer stored as rank-``r`` factors: ``y = (x·rightᵀ)·leftᵀ + bias``.

    ``r·(in + out)`` parameters and multiply-adds per input vector instead of ``in·out``.

    Args:
        in_features, out_features, rank: sizes; ``left`` is ``(out, r)``, ``right`` is ``(r, in)``.
        bias: whether to keep a bias of shape ``(out,)``.

    Shapes: input ``(*, in)``, output ``(*, out)``.
    """

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.left = nn.Parameter(torch.empty(out_features, rank))
        self.right = nn.Parameter(torch.empty(rank, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        nn.init.kaiming_uniform_(self.left, a=math.sqrt(5))
        nn.init.kaiming_uniform_(self.right, a=math.sqrt(5))

    @classmethod
    def from_factors(
        cls, left: torch.Tensor, right: torch.Tensor, bias: torch.Tensor | None = None
    ) -> LowRankLinear:
        """Build from ``left`` (out, r) and ``right`` (r, in) (copied)."""
        layer = cls(right.shape[1], left.shape[0], left.shape[1], bias=bias is not None)
        layer = layer.to(device=left.device, dtype=left.dtype)
        with torch.no_grad():
            layer.left.copy_(left)
            layer.right.copy_(right)
            if bias is not None:
                layer.bias.copy_(bias)
        return layer

    @property
    def weight(self) -> torch.Tensor:
        """The dense ``(out, in)`` weight these factors represent."""
        return self.left @ self.right

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.linear(x, self.right), self.left, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"
