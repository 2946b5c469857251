"""One STR (or fixed-rank / dense) training run on FSDD in a plain PyTorch loop — the parity study's harness.

    python -m research.rank_parity.harness --lever baseline --strength 3e-2 --seed 0 --epochs 100
    python -m research.rank_parity.harness --lever fixed-rank --ranks 12,40 --seed 0 --epochs 100
    python -m research.rank_parity.harness --list          # the levers and what each changes

The setting is the CLI's (``python -m strrnn.train --dataset fsdd``): FastGRNN hidden 100 over 32 log-mel x 99
frames, batch 100 in the CLI's per-epoch order (``seed * 1_000_003 + epoch``), Adam lr 1e-3 with a per-step
cosine schedule over every group, weight decay 1e-3 on the weights, ``strrnn.param_groups`` for the spectra and
thresholds (lr 0.03, eps 0.1), ``s_init`` -10, ``min_rank`` 1. A *lever* is a :class:`Recipe`: a variant of the
rank-learning recipe built here, without touching the library — a threshold relative to the spectrum's scale
(:class:`RelativeLowRankSTR`), which groups get the strength as decay, a scheduled threshold, when the ranks are
frozen and what happens then (debias into plain factors, Adam reset, learning-rate re-warm).

Test accuracy is that of the model at the end of training (no best-checkpoint selection), for STR and
fixed-rank alike. Each run writes ``results/<name>.json`` atomically and is skipped when that file exists.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import parametrize

import strrnn
from strrnn.curves import cosine, cubic
from strrnn.fileio import atomic_write_text

REPO = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_DATA = REPO.parent / "shared" / "data" / "fsdd"
HIDDEN, FEATURES = 100, 32
WEIGHT_DECAY, LR, BATCH = 1e-3, 1e-3, 100


# ---------------------------------------------------------------------------------------------------------
# Threshold variants
# ---------------------------------------------------------------------------------------------------------
class RelativeLowRankSTR(strrnn.LowRankSTR):
    """LowRankSTR whose threshold is relative to the spectrum's own scale: ``alpha = g(s) * ref(|m|)``.

    ``ref`` is ``max |m|`` (``"max"``), the root mean square of ``m`` (``"rms"``) or its Euclidean norm
    (``"fro"``: with orthogonal factors the Frobenius norm of the untruncated ``A·diag(m)·B``), taken without
    gradient, so that shrinking or growing the whole spectrum does not move the rank: only ``s`` does. With
    orthogonal factors ``max |m|`` is the spectral norm. The ``min_rank`` / frozen-rank clamps are the library's.

    ``form`` is how the threshold acts while ``s`` is learned (``hard=True`` is the library's driven hard mask,
    which gives ``s`` no gradient):

    * ``"soft"``: ``S(m, alpha)`` (STR's soft threshold; survivors shrink by ``alpha``);
    * ``"st"``: straight-through hard threshold: forward ``m·1[|m| > alpha]`` (survivors keep their value), backward
      the soft threshold's gradients to ``m`` and ``alpha`` (``S(m, alpha) + (alpha·sign(m)·1[|m| > alpha])`` with the
      second term detached), so ``s`` still learns from the loss as in STR;
    * ``"st-sigmoid"``: forward the same hard mask; ``m`` gets the mask's gradient ``1[|m| > alpha]`` and ``alpha``
      that of a relaxed mask ``m·sigmoid((log|m| - log alpha) / tau)`` (``m`` detached in it), so ``s`` is told what
      cutting the *marginal* directions (those within a factor ``~e^tau`` of the threshold) would cost, not what
      shrinking every survivor would; ``tau`` is a width in log-magnitude, scale-free;
    * ``"garrote"``: the non-negative garrote (Breiman 1995) ``sign(m)·relu(|m| - alpha²/|m|)``: continuous at the
      threshold like the soft threshold (a cut direction has already shrunk to zero, so ``s`` gets the loss's
      gradient from the marginal directions, ``dy/dalpha = -2·sign(m)·alpha/|m|``), but a survivor far above it is
      barely shrunk (by ``alpha²/|m|``), like the hard threshold.
    """

    FORMS = ("soft", "st", "st-sigmoid", "garrote")

    def __init__(self, shape, ref: str = "max", form: str = "soft", tau: float = 0.25, **options) -> None:
        super().__init__(shape, **options)  # hard=True: the library's mask m·1[|m| > alpha], survivors not shrunk
        if ref not in ("max", "rms", "fro"):
            raise ValueError(f"ref must be 'max', 'rms' or 'fro', got {ref!r}")
        if form not in self.FORMS:
            raise ValueError(f"form must be one of {self.FORMS}, got {form!r}")
        self.ref, self.form, self.tau = ref, form, float(tau)

    def alpha(self, m: torch.Tensor) -> torch.Tensor:
        """``g(s) * ref(|m|)`` clamped so that the rank stays within ``[min_rank, rank_cap]``."""
        if self.threshold is None:
            return m.new_zeros(())
        magnitudes = m.detach().abs()
        if self.ref == "max":
            scale = magnitudes.max()
        elif self.ref == "rms":
            scale = magnitudes.pow(2).mean().sqrt()
        else:
            scale = magnitudes.pow(2).sum().sqrt()
        return self.clamp_to_rank_limits(self.threshold() * scale, magnitudes)

    def thresholded(self, m: torch.Tensor) -> torch.Tensor:
        if self._is_released or self.threshold is None or self.hard or self.form == "soft":
            return super().thresholded(m)
        alpha = self.alpha(m)
        if self.form == "garrote":
            magnitude = m.abs()
            return torch.sign(m) * torch.relu(magnitude - alpha * alpha / magnitude.clamp_min(1e-30))
        mask = m.detach().abs() > alpha.detach()
        if self.form == "st":
            return strrnn.soft_threshold(m, alpha) + (alpha * torch.sign(m) * mask).detach()
        hard = m * mask
        md = m.detach()
        relaxed = md * torch.sigmoid((md.abs().clamp_min(1e-30).log() - alpha.clamp_min(1e-30).log()) / self.tau)
        return hard + (relaxed - relaxed.detach())


class SigmaRelativeLowRankSTR(strrnn.LowRankSTR):
    """LowRankSTR thresholding the *effective* singular values ``sigma_i = |m_i|·||a_i||·||b_i||`` (norms of
    the i-th column of A and row of B, without gradient) relative to their largest: entry i is cut when
    ``sigma_i <= g(s)·max sigma``, survivors shrink by that amount in sigma-space (per entry
    ``alpha_i = g(s)·max sigma / (||a_i||·||b_i||)``).

    With free factors ``m`` alone says little about a direction's size (the library starts every ``m`` at one
    and puts the scale into ``A``, ``B``), so a threshold relative to ``max |m|`` cuts nothing and then
    everything; with orthogonal factors the norms are one and this is :class:`RelativeLowRankSTR` (``"max"``).
    The norms are refreshed at every forward pass (a buffer, so :meth:`rank_of` agrees with the last forward).
    """

    def __init__(self, shape, **options) -> None:
        super().__init__(shape, **options)
        self.register_buffer("norms", torch.ones(self.max_rank))

    def factors(self, A, m, B):
        if self.factor_kind == "orthogonal":
            return super().factors(A, m, B)
        with torch.no_grad():
            self.norms.copy_(A.norm(dim=0) * B.norm(dim=1))
        return A, self.thresholded(m), B

    def alpha(self, m: torch.Tensor) -> torch.Tensor:
        if self.threshold is None:
            return m.new_zeros(())
        norms = self.norms.clamp_min(1e-12)
        sigma = m.detach().abs() * norms
        return self.clamp_to_rank_limits(self.threshold() * sigma.max(), sigma) / norms


# ---------------------------------------------------------------------------------------------------------
# Recipes (levers)
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Recipe:
    """A rank-learning recipe; ``strength`` (λ or a target) is given per run.

    Attributes:
        kind: ``"str"``, ``"fixed-rank"`` (vanilla free factors at given ranks) or ``"dense"``.
        factors: ``"free"`` or ``"orthogonal"``.
        threshold: ``"abs"`` (library: ``alpha = e^s``), ``"max"``, ``"rms"`` or ``"fro"``
            (:class:`RelativeLowRankSTR`), ``"sigma"`` (:class:`SigmaRelativeLowRankSTR`).
        spectrum_decay: ``"strength"`` (decay λ on ``m`` too, the library's coupled decay) or ``"weights"``
            (``m`` at the weights' 1e-3; λ acts on ``s`` only).
        s_penalty: ``"l2"`` (decay λ·s, pulls s to 0) or ``"push"`` (a constant upward gradient -λ on s: no
            fixed point, so ``alpha = e^s`` is unbounded).
        schedule: ``None`` (s learned) or ``"cubic"``: s is not learned but set every step so that
            ``g(s) = strength * (1 - (1 - p)^3)``, p going 0 -> 1 over ``[sched_start, sched_end]`` of training
            (GMP's schedule on a relative threshold; the spectrum can still outgrow it).
        decay_warmup: fraction of training over which λ on ``s`` ramps up from 0 (CLI: 0.15).
        freeze: ``"fixed"`` (at ``freeze_at``), ``"plateau"`` (when the W,U parameter count has not changed for
            ``plateau_epochs`` epochs, not before ``plateau_min``, at ``freeze_at`` at the latest) or ``"none"``.
        convert: at the freeze, replace each STR parametrization by plain factors ``A·B`` at the learned rank
            (balanced SVD of the current weight: the thresholded spectrum is absorbed, no shrinkage remains);
            the optimizer is rebuilt for the new parameters (fresh Adam state).
        reset_adam: at the freeze, clear Adam's state (implied by ``convert``).
        rewarm: at the freeze, restart the cosine schedule at ``rewarm`` x the initial learning rates
            (0: keep following the original cosine).
        str_lr, str_eps: lr and Adam eps of the spectrum and threshold groups (library: 0.03, 0.1).
        m_lr: lr of the spectrum group only, if different (``None``: ``str_lr``).
        hard: relative thresholds only: keep survivors unshrunk (``m·1[|m| > alpha]``) instead of soft-thresholding
            (the library's driven mask: ``s`` gets no gradient, for scheduled thresholds).
        form: relative thresholds with a learned ``s`` only: ``"soft"`` (STR), ``"st"`` (straight-through hard
            threshold: forward ``m·1[|m| > alpha]``, backward the soft threshold's gradients to ``m`` and ``s``),
            ``"st-sigmoid"`` (forward the hard mask, ``s``'s gradient from a relaxed mask
            ``m·sigmoid((log|m| - log alpha) / tau)`` that sees only the marginal directions) or ``"garrote"``
            (``sign(m)·relu(|m| - alpha²/|m|)``: continuous, survivors far above the threshold barely shrunk); see
            :class:`RelativeLowRankSTR`.
        tau: the relaxed mask's width in log-magnitude (``"st-sigmoid"``).
        s_lr, s_eps: lr and Adam eps of the threshold group alone, if different (``None``: ``str_lr``, ``str_eps``).
        release_unshrunk: soft threshold only: at the conversion, re-factor ``A·diag(m·1[|m| > alpha])·B`` (the
            survivors' unshrunk values) instead of the current, shrunk weight ``A·diag(S(m, alpha))·B``.
    """

    kind: str = "str"
    factors: str = "free"
    threshold: str = "abs"
    spectrum_decay: str = "strength"
    s_penalty: str = "l2"
    schedule: str | None = None
    sched_start: float = 0.05
    sched_end: float = 0.4
    decay_warmup: float = 0.15
    freeze: str = "fixed"
    freeze_at: float = 0.75
    plateau_epochs: int = 5
    plateau_min: float = 0.2
    convert: bool = False
    reset_adam: bool = False
    rewarm: float = 0.0
    str_lr: float = 0.03
    str_eps: float = 0.1
    m_lr: float | None = None
    hard: bool = False
    form: str = "soft"
    tau: float = 0.25
    s_lr: float | None = None
    s_eps: float | None = None
    release_unshrunk: bool = False
    description: str = ""


_REL = dict(threshold="max", spectrum_decay="weights")
# learned-rel: orthogonal factors, alpha = e^s·max|m| (no grad), λ on s only (spectra at 1e-3), decay warm-up 15%,
# frozen at 40% and converted into plain factors (fresh Adam), cosine restarted at 1e-3. Each lever changes one thing.
_LEARNED_BASE = dict(factors="orthogonal", **_REL, freeze_at=0.4, convert=True, rewarm=1.0)
_LEARNED: list[tuple[str, dict, str]] = [
    ("learned-rel", {}, "learned STR: orthogonal, alpha = e^s·max|m|, λ on s only, frozen + debiased into A·B at "
                        "40%, cosine restarted at 1e-3"),
    ("learned-rel-st", dict(form="st"), "learned-rel with a straight-through hard threshold (forward m·1[|m|>alpha], "
                                         "backward the soft threshold's gradients to m and s)"),
    ("learned-rel-unshrunk", dict(release_unshrunk=True), "learned-rel, re-factored at the freeze with the "
                                                          "survivors' unshrunk values m·mask"),
    ("learned-rel-sig", dict(form="st-sigmoid"), "learned-rel, hard forward; s's gradient from a relaxed mask "
                                                 "m·sigmoid(log(|m|/alpha)/0.25) (marginal directions only)"),
    ("learned-rel-garrote", dict(form="garrote"), "learned-rel with the non-negative garrote "
                                                   "sign(m)·relu(|m| - alpha²/|m|) instead of the soft threshold"),
    ("learned-rel-wu0", dict(decay_warmup=0.0), "learned-rel without the decay warm-up on s"),
    ("learned-rel-wu30", dict(decay_warmup=0.3), "learned-rel, λ on s ramped up over 30% of training"),
    ("learned-rel-f25", dict(freeze_at=0.25), "learned-rel frozen + debiased at 25%"),
    ("learned-rel-f55", dict(freeze_at=0.55), "learned-rel frozen + debiased at 55%"),
    ("learned-rel-slr01", dict(s_lr=0.01), "learned-rel, threshold group at lr 0.01 (spectra at 0.03)"),
    ("learned-rel-seps1", dict(s_eps=1.0), "learned-rel, threshold group at Adam eps 1 (SGD-like: step ∝ gradient)"),
    ("learned-rel-fro", dict(threshold="fro"), "learned-rel with alpha = e^s·||m||_2 (Frobenius norm of W)"),
    ("learned-rel-rms", dict(threshold="rms"), "learned-rel with alpha = e^s·rms(m)"),
    ("learned-rel-wu30-unshrunk", dict(decay_warmup=0.3, release_unshrunk=True),
     "learned-rel-wu30 re-factored at the freeze with the survivors' unshrunk values m·mask"),
]
LEVERS: dict[str, Recipe] = {
    "baseline": Recipe(description="the CLI recipe: abs threshold, λ on s and m, warm-up 15%, freeze at 75%"),
    "baseline-convert": Recipe(convert=True, description="baseline, debiased into plain factors at the freeze"),
    "rel-max": Recipe(**_REL, description="alpha = e^s·max|m| (no grad), λ on s only, m at 1e-3"),
    "rel-rms": Recipe(threshold="rms", spectrum_decay="weights", description="alpha = e^s·rms(m), λ on s only"),
    "rel-max-early": Recipe(**_REL, freeze_at=0.4, description="rel-max, frozen at 40%"),
    "rel-max-plateau": Recipe(**_REL, freeze="plateau", description="rel-max, frozen when ranks plateau"),
    "rel-max-plateau-convert": Recipe(**_REL, freeze="plateau", convert=True,
                                      description="rel-max, frozen at plateau, debiased into A·B, Adam reset"),
    "rel-max-plateau-rewarm": Recipe(**_REL, freeze="plateau", convert=True, rewarm=1.0,
                                     description="rel-max-plateau-convert + cosine restarted at lr 1e-3"),
    "rel-max-early-convert": Recipe(**_REL, freeze_at=0.4, convert=True,
                                    description="rel-max frozen at 40%, debiased into A·B, Adam reset"),
    "rel-max-nofreeze": Recipe(**_REL, freeze="none", description="rel-max, never frozen"),
    "orth-baseline": Recipe(factors="orthogonal", description="baseline with orthogonal factors"),
    "orth-rel-max": Recipe(factors="orthogonal", **_REL, description="orthogonal factors + rel-max"),
    "orth-rel-max-early-convert": Recipe(factors="orthogonal", **_REL, freeze_at=0.4, convert=True,
                                         description="orthogonal + rel-max, frozen at 40%, debiased"),
    "s-push": Recipe(spectrum_decay="weights", s_penalty="push",
                     description="abs threshold, constant upward push λ on s (unbounded), m at 1e-3"),
    "sched-cubic": Recipe(**_REL, schedule="cubic", freeze_at=0.4, decay_warmup=0.0,
                          description="relative threshold driven along GMP's cubic schedule 5%->40%, frozen at 40%"),
    "sched-cubic-convert": Recipe(**_REL, schedule="cubic", freeze_at=0.4, decay_warmup=0.0, convert=True,
                                  description="sched-cubic, debiased into A·B at 40%"),
    "sched-cubic-orth-convert": Recipe(factors="orthogonal", **_REL, schedule="cubic", freeze_at=0.4, decay_warmup=0.0,
                                       convert=True, description="sched-cubic-convert with orthogonal factors"),
    "sigma-sched-convert": Recipe(threshold="sigma", spectrum_decay="weights", schedule="cubic", freeze_at=0.4,
                                  decay_warmup=0.0, convert=True,
                                  description="free factors, threshold on |m_i|·||a_i||·||b_i|| relative to its max, "
                                              "cubic schedule 5%->40%, frozen + debiased into A·B at 40%"),
    "sigma-max": Recipe(threshold="sigma", spectrum_decay="weights",
                        description="free factors, learned s on the sigma-relative threshold, λ on s only"),
    "sigma-max-early-convert": Recipe(threshold="sigma", spectrum_decay="weights", freeze_at=0.4, convert=True,
                                      description="sigma-max frozen at 40%, debiased into A·B"),
    "sched-cubic-orth": Recipe(factors="orthogonal", **_REL, schedule="cubic", freeze_at=0.4, decay_warmup=0.0,
                               description="orthogonal, scheduled relative threshold, frozen at 40% (no debias)"),
    "sched-cubic-orth-convert-rewarm": Recipe(factors="orthogonal", **_REL, schedule="cubic", freeze_at=0.4,
                                              decay_warmup=0.0, convert=True, rewarm=1.0,
                                              description="sched-cubic-orth-convert + cosine restarted at 1e-3"),
    "sched-cubic-orth-convert-f25": Recipe(factors="orthogonal", **_REL, schedule="cubic", sched_end=0.25,
                                           freeze_at=0.25, decay_warmup=0.0, convert=True,
                                           description="sched-cubic-orth-convert, schedule 5%->25%, frozen at 25%"),
    "sched-cubic-orth-convert-rewarm-f25": Recipe(factors="orthogonal", **_REL, schedule="cubic", sched_end=0.25,
                                                  freeze_at=0.25, decay_warmup=0.0, convert=True, rewarm=1.0,
                                                  description="schedule 5%->25%, frozen + debiased at 25%, "
                                                              "cosine restarted at 1e-3"),
    "sigma-sched-convert-rewarm": Recipe(threshold="sigma", spectrum_decay="weights", schedule="cubic",
                                         freeze_at=0.4, decay_warmup=0.0, convert=True, rewarm=1.0,
                                         description="sigma-sched-convert + cosine restarted at 1e-3"),
    "sched-cubic-orth-rewarm": Recipe(factors="orthogonal", **_REL, schedule="cubic", freeze_at=0.4,
                                      decay_warmup=0.0, rewarm=1.0,
                                      description="sched-cubic-orth (ranks frozen in the STR parametrization, no "
                                                  "conversion, Adam state kept) + cosine restarted at 1e-3"),
    "sched-cubic-orth-hard-convert-rewarm": Recipe(factors="orthogonal", **_REL, schedule="cubic", freeze_at=0.4,
                                                   decay_warmup=0.0, convert=True, rewarm=1.0, hard=True,
                                                   description="sched-cubic-orth-convert-rewarm with a hard "
                                                               "threshold (mask; survivors never shrunk)"),
    "sched-cubic-orth-convert-rewarm-mlr": Recipe(factors="orthogonal", **_REL, schedule="cubic", freeze_at=0.4,
                                                  decay_warmup=0.0, convert=True, rewarm=1.0, m_lr=1e-3,
                                                  description="sched-cubic-orth-convert-rewarm, spectra at lr 1e-3"),
    "rel-max-lr3e-3": Recipe(**_REL, str_lr=3e-3, description="rel-max with STR groups at lr 3e-3"),
    "rel-max-m-lr1e-3": Recipe(**_REL, m_lr=1e-3, description="rel-max with the spectra at the weights' lr 1e-3"),
    # learned STR with the fine-tuning phase (the best learned recipe) and its levers
    **{name: Recipe(**{**_LEARNED_BASE, **extra}, description=text) for name, extra, text in _LEARNED},
    "fixed-rank": Recipe(kind="fixed-rank", description="vanilla free factors A·B at given ranks, from scratch"),
    "dense": Recipe(kind="dense", description="full-rank FastGRNN"),
}


def register_lever(name: str, recipe: Recipe) -> None:
    """Add a lever (used by the sweep for ad-hoc variants)."""
    LEVERS[name] = recipe


# ---------------------------------------------------------------------------------------------------------
# Data and model
# ---------------------------------------------------------------------------------------------------------
_DATA_CACHE: dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]] = {}


def load_fsdd(root: str | os.PathLike = DEFAULT_DATA) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{"train"|"val"|"test": (x (N, 99, 32), y (N,))}``, normalized as the CLI's data module does."""
    key = str(root)
    if key not in _DATA_CACHE:
        dm = strrnn.data.get("fsdd", root=root, batch_size=BATCH, features="logmel32", progress=False)
        dm.setup("fit")
        out = {}
        for split, ds in (("train", dm.train_set), ("val", dm.val_set), ("test", dm.test_set)):
            xs, ys = zip(*(ds[i] for i in range(len(ds))))
            out[split] = (torch.stack(xs), torch.tensor(ys))
        _DATA_CACHE[key] = out
    return _DATA_CACHE[key]


def build_model(seed: int) -> nn.Module:
    """The CLI's FSDD model (seeded as ``pl.seed_everything(seed)`` before the build)."""
    torch.manual_seed(seed)
    return strrnn.models.build("keyword_spotter", n_features=FEATURES, n_classes=10, cell="fastgrnn",
                               hidden_size=HIDDEN, num_layers=1, pooling="last")


def recurrent_cells(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if getattr(type(m), "recurrent_weights", None)]


def str_tensors(model: nn.Module):
    """Yield ``(cell, name, parametrization)`` for each low-rank STR tensor (W, U) of ``model``."""
    for cell in recurrent_cells(model):
        for name in ("W", "U"):
            if parametrize.is_parametrized(cell, name):
                p = cell.parametrizations[name][0]
                if isinstance(p, strrnn.LowRankSTR) and p.threshold is not None:
                    yield cell, name, p


def spectrum_param(cell: nn.Module, name: str) -> torch.Tensor:
    return cell.parametrizations[name].original1


def current_ranks(model: nn.Module) -> dict[str, int]:
    """``{"W": r, "U": r}`` (one cell) from the STR tensors, else from fixed-rank factors, else full."""
    ranks = {}
    for cell in recurrent_cells(model):
        for name in ("W", "U"):
            if parametrize.is_parametrized(cell, name):
                p = cell.parametrizations[name][0]
                m = spectrum_param(cell, name)
                ranks[name] = p.rank_of(m) if p.threshold is not None else p.max_rank
            else:
                ranks[name] = min(getattr(cell, name).shape)
    return ranks


def wu_params(ranks: dict[str, int]) -> tuple[int, int, int]:
    """(exported W,U params ``sum min(r(out+in), out·in)``, raw ``sum r(out+in)``, dense 13,200)."""
    shapes = {"W": (HIDDEN, FEATURES), "U": (HIDDEN, HIDDEN)}
    raw = sum(r * sum(shapes[k]) for k, r in ranks.items())
    capped = sum(min(r * sum(shapes[k]), math.prod(shapes[k])) for k, r in ranks.items())
    return capped, raw, sum(math.prod(s) for s in shapes.values())


def apply_str(model: nn.Module, recipe: Recipe) -> None:
    """Register the recipe's LowRankSTR (library class, or :class:`RelativeLowRankSTR`) on W and U."""
    options = dict(factors=recipe.factors, g="exp", s_init=-10.0, min_rank=1)
    if recipe.threshold == "abs":
        strrnn.lowrank_rnn(model, **options)
        return
    for cell in recurrent_cells(model):
        for name in ("W", "U"):
            weight = getattr(cell, name)
            if recipe.threshold == "sigma":
                p = SigmaRelativeLowRankSTR(weight.shape, **options).to(weight)
            else:
                p = RelativeLowRankSTR(weight.shape, ref=recipe.threshold, hard=recipe.hard, form=recipe.form,
                                       tau=recipe.tau, **options).to(weight)
            parametrize.register_parametrization(cell, name, p)


def convert_to_factors(model: nn.Module, unshrunk: bool = False) -> dict[str, int]:
    """Replace each STR parametrization by plain factors at its learned rank (same function, no threshold).

    ``unshrunk``: re-factor ``A·diag(m·1[S(m) != 0])·B`` (the survivors' values before the soft threshold's shrinkage)
    instead of the current weight.
    """
    ranks = {}
    for cell, name, p in list(str_tensors(model)):
        r = max(p.rank_of(spectrum_param(cell, name)), p.min_rank)
        unshrunk_weight = None
        if unshrunk:
            with torch.no_grad():
                plist = cell.parametrizations[name]
                A, m, B = plist.original0, plist.original1, plist.original2
                left, spec, right = p.factors(A, m, B)
                unshrunk_weight = ((left * (m * (spec != 0))) @ right).reshape(p.shape)
        parametrize.remove_parametrizations(cell, name, leave_parametrized=True)
        if unshrunk_weight is not None:
            with torch.no_grad():
                getattr(cell, name).copy_(unshrunk_weight)
        strrnn.lowrank(cell, name, max_rank=r, threshold=False, factors="free")
        ranks[name] = r
    return ranks


# ---------------------------------------------------------------------------------------------------------
# Optimizer and schedules
# ---------------------------------------------------------------------------------------------------------
def make_optimizer(model: nn.Module, recipe: Recipe, strength: float) -> torch.optim.Adam:
    """Adam over ``strrnn.param_groups``; the recipe's decays/lrs are set on the named groups."""
    groups = strrnn.param_groups(model, weight_decay=WEIGHT_DECAY, threshold_decay=strength,
                                 threshold_lr=recipe.str_lr, threshold_eps=recipe.str_eps)
    for g in groups:
        if g["name"] == "spectrum":
            if recipe.spectrum_decay == "weights":
                g["weight_decay"] = WEIGHT_DECAY
            if recipe.m_lr is not None:
                g["lr"] = recipe.m_lr
        if g["name"] == "threshold" and (recipe.s_penalty == "push" or recipe.schedule):
            g["weight_decay"] = 0.0
        if g["name"] == "threshold" and recipe.s_lr is not None:
            g["lr"] = recipe.s_lr
        if g["name"] == "threshold" and recipe.s_eps is not None:
            g["eps"] = recipe.s_eps
        g["base_lr"] = g.get("lr", LR)
        g["base_weight_decay"] = g["weight_decay"]
    return torch.optim.Adam(groups, lr=LR)


# ---------------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------------
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 300) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(y), batch):
            correct += int((model(x[i:i + batch]).argmax(-1) == y[i:i + batch]).sum())
    model.train()
    return correct / len(y)


def run_name(lever: str, strength: float | None, seed: int, epochs: int, ranks: dict | None = None) -> str:
    if ranks is not None:
        return f"{lever}_W{ranks['W']}-U{ranks['U']}_s{seed}_e{epochs}"
    return f"{lever}_{strength:g}_s{seed}_e{epochs}" if strength is not None else f"{lever}_s{seed}_e{epochs}"


def library_digest() -> str:
    """sha1 (12 hex digits) of the strrnn sources this process imported: which library version made a run."""
    digest = hashlib.sha1()
    for path in sorted(Path(strrnn.__file__).parent.rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def write_json_atomic(path: Path, payload: dict) -> None:
    """``payload`` as JSON at ``path``, written atomically (:func:`strrnn.fileio.atomic_write_text`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(payload, indent=1))


def train(lever: str, strength: float | None = None, seed: int = 0, epochs: int = 100,
          ranks: dict[str, int] | None = None, data_root=DEFAULT_DATA, results: Path = RESULTS,
          verbose: bool = True) -> dict:
    """Run one configuration (or read its JSON if it exists) and return the result dict."""
    recipe = LEVERS[lever]
    if recipe.kind == "fixed-rank" and ranks is None:
        raise ValueError("fixed-rank needs ranks={'W': r_W, 'U': r_U}")
    if recipe.kind == "str" and strength is None:
        raise ValueError(f"lever {lever!r} needs a strength")
    name = run_name(lever, strength if recipe.kind == "str" else None, seed, epochs,
                    ranks if recipe.kind == "fixed-rank" else None)
    path = Path(results) / f"{name}.json"
    if path.exists():
        return json.loads(path.read_text())
    torch.set_num_threads(1)
    started = time.time()
    data = load_fsdd(data_root)
    x_train, y_train = data["train"]
    model = build_model(seed)
    if recipe.kind == "fixed-rank":
        strrnn.lowrank_rnn(model, max_rank=dict(ranks), threshold=False, factors="free")
    elif recipe.kind == "str":
        apply_str(model, recipe)
    optimizer = make_optimizer(model, recipe, strength or 0.0)
    steps_per_epoch = math.ceil(len(y_train) / BATCH)
    total = epochs * steps_per_epoch
    freeze_step = round(recipe.freeze_at * epochs) * steps_per_epoch if recipe.freeze != "none" else None
    learning = recipe.kind == "str"
    frozen_at, lr_restart, lr_scale = None, 0, 1.0
    history, last_params, unchanged = [], None, 0
    step = 0
    for epoch in range(epochs):
        if learning and freeze_step is not None and step >= freeze_step:
            optimizer = _freeze(model, optimizer, recipe, strength)
            learning, frozen_at = False, epoch
            if recipe.rewarm:
                lr_restart, lr_scale = step, recipe.rewarm
        order = torch.randperm(len(y_train), generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        for i in range(0, len(order), BATCH):
            idx = order[i:i + BATCH]
            _set_hyperparameters(model, optimizer, recipe, strength, step, total, learning, lr_restart, lr_scale)
            loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if learning and recipe.s_penalty == "push":
                ramp = min(1.0, step / max(1, recipe.decay_warmup * total)) if recipe.decay_warmup else 1.0
                for _, _, p in str_tensors(model):
                    p.threshold.s.grad = p.threshold.s.grad - strength * ramp
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"non-finite loss at epoch {epoch}, step {step}")
            optimizer.step()
            step += 1
        r = current_ranks(model)
        params = wu_params(r)[0]
        history.append([r["W"], r["U"]])
        if learning and recipe.freeze == "plateau" and epoch + 1 >= recipe.plateau_min * epochs:
            unchanged = unchanged + 1 if params == last_params else 0
            if unchanged >= recipe.plateau_epochs:
                freeze_step = step  # freeze at the start of the next epoch
        last_params = params
        if verbose and (epoch % 10 == 9 or epoch == epochs - 1):
            print(f"[{name}] epoch {epoch + 1}: ranks {r} loss {loss.item():.3f} "
                  f"{time.time() - started:.0f}s", flush=True)
    final = current_ranks(model)
    capped, raw, dense = wu_params(final)
    result = {
        "name": name, "lever": lever, "recipe": dataclasses.asdict(recipe),
        "strength": strength, "seed": seed, "epochs": epochs,
        "ranks": final, "wu_params": capped, "wu_params_raw": raw, "wu_dense": dense,
        "wu_pct": 100.0 * capped / dense,
        "test_acc": evaluate(model, *data["test"]), "val_acc": evaluate(model, *data["val"]),
        "train_acc": evaluate(model, *data["train"]),
        "frozen_at_epoch": frozen_at, "rank_history": history, "wall_s": time.time() - started,
        "torch": torch.__version__, "strrnn_digest": library_digest(),
    }
    write_json_atomic(path, result)
    if verbose:
        print(f"[{name}] ranks {final} W,U {capped} ({result['wu_pct']:.1f}%) test {result['test_acc']:.4f} "
              f"val {result['val_acc']:.4f} in {result['wall_s']:.0f}s", flush=True)
    return result


def _set_hyperparameters(model, optimizer, recipe: Recipe, strength, step: int, total: int, learning: bool,
                         lr_restart: int, lr_scale: float) -> None:
    """Per-step: the cosine (or re-warmed cosine) lr on every group, the λ warm-up on s, the scheduled s."""
    factor = lr_scale * cosine(step, lr_restart, total)
    for g in optimizer.param_groups:
        g["lr"] = g["base_lr"] * factor
        if g.get("name") == "threshold" and learning and recipe.decay_warmup and not g.get("frozen"):
            g["weight_decay"] = g["base_weight_decay"] * min(1.0, step / (recipe.decay_warmup * total))
    if learning and recipe.schedule == "cubic":
        progress = (step / total - recipe.sched_start) / (recipe.sched_end - recipe.sched_start)
        target = max(strength * cubic(progress), 1e-12)
        with torch.no_grad():
            for _, _, p in str_tensors(model):
                p.threshold.s.fill_(math.log(target))


def _freeze(model: nn.Module, optimizer, recipe: Recipe, strength) -> torch.optim.Adam:
    """Freeze the learned ranks (library semantics: spectra/thresholds relaxed to the weights' decay), or
    convert to plain factors; return the optimizer to continue with."""
    if recipe.convert:
        convert_to_factors(model, unshrunk=recipe.release_unshrunk)
        return make_optimizer(model, recipe, strength)
    for cell, name, p in str_tensors(model):
        p.freeze_rank(max(p.rank_of(spectrum_param(cell, name)), p.min_rank))
    for g in optimizer.param_groups:
        if g.get("name") in ("spectrum", "threshold"):
            g["weight_decay"] = g["base_weight_decay"] = WEIGHT_DECAY
            g["frozen"] = True
    if recipe.reset_adam:
        optimizer.state.clear()
    return optimizer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lever", default="baseline", help="a recipe name (--list)")
    parser.add_argument("--strength", type=float, default=None, help="λ (or the scheduled target) of STR levers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--ranks", default=None, help="fixed-rank: 'r_W,r_U'")
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA))
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument("--list", action="store_true", help="print the levers and exit")
    args = parser.parse_args(argv)
    if args.list:
        for key, recipe in LEVERS.items():
            print(f"{key:28s} {recipe.description}")
        return
    ranks = None
    if args.ranks:
        w, u = (int(v) for v in args.ranks.split(","))
        ranks = {"W": w, "U": u}
    train(args.lever, args.strength, args.seed, args.epochs, ranks, args.data_dir, Path(args.results))


if __name__ == "__main__":
    main()
