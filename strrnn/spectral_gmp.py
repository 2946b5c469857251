r"""Spectral GMP: gradual magnitude pruning of the spectrum, the baseline beside learned STR — :class:`SpectralGMP`.

This is **not** STR: nothing is learned about the threshold. It is GMP (Zhu & Gupta's gradual magnitude pruning),
applied to singular values instead of weights: a *hard* threshold is *driven* along GMP's cubic schedule, relative
to each matrix's largest singular value, so the directions that survive keep their full value:

.. math::  \alpha_t = \text{strength}\cdot c(p_t)\cdot \max_i |m_i|, \qquad c(p) = 1 - (1 - p)^3,
           \qquad S(m) = m\cdot\mathbf 1[|m| > \alpha_t]

with :math:`p_t` going from 0 to 1 between the fractions ``start`` and ``end`` of training. With orthogonal factors
:math:`|m_i|` are the singular values, so ``strength`` is the fraction of the largest singular value below which
directions are cut: one knob in ``[0, 1)``, larger cuts more. At ``end`` every matrix is frozen at its rank and
released (:class:`strrnn.rank_budget.RankRecipe`): the rest of training is fixed-rank training at those ranks,
started from the pruned model, with a learning-rate cycle of its own. It sits beside ``fixed-rank`` as a strong
baseline, as ``gmp`` sits beside ``unstructured`` on the CNN side; learned STR is :class:`strrnn.STRRecipe`.

Budgets: ``target_ranks`` or ``target_params`` replace ``strength``; the threshold then climbs towards the largest
singular value and each matrix (ranks) or the whole model (parameters) is frozen as soon as it meets its budget,
at ``end`` at the latest (then cut to the budget by :func:`strrnn.rank_budget.ranks_for_params`).

Plain PyTorch::

    strrnn.lowrank_rnn(model, factors="orthogonal")
    opt = torch.optim.Adam(strrnn.param_groups(model, weight_decay=1e-3), lr=1e-3)
    gmp = strrnn.SpectralGMP(model, opt, total_steps=epochs * len(loader), strength=0.6)
    lr = torch.optim.lr_scheduler.LambdaLR(opt, gmp.lr_lambda)   # cosine, restarted when the ranks freeze
    for epoch in range(epochs):
        for x, y in loader:
            opt.zero_grad(); F.cross_entropy(model(x), y).backward(); opt.step()
            gmp.step(); lr.step()
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import torch
from torch import nn

from .curves import cubic
from .factored import originals
from .rank_budget import RankRecipe, ranks_for_params

__all__ = ["SpectralGMP", "RankSchedule", "cubic", "ranks_for_params"]


class SpectralGMP(RankRecipe):
    """Drive, freeze and release the thresholds of every low-rank STR tensor of ``model`` (spectral GMP).

    Call :meth:`step` once after every optimizer step. Checkpoint it with :meth:`state_dict`.

    Args:
        model: a module carrying :class:`strrnn.LowRankSTR` with thresholds and orthogonal factors.
        optimizer: the optimizer over ``model``'s parameters (its state of released tensors is reset), or None.
        total_steps: optimizer steps of the whole training run.
        strength: final relative threshold in ``[0, 1)`` (fraction of the largest singular value); larger cuts more.
        start, end: fractions of ``total_steps`` where the threshold starts rising and where ranks are frozen.
        release, rewarm, target_ranks, target_params: see :class:`strrnn.rank_budget.RankRecipe`.

    Raises:
        ValueError: no thresholded low-rank tensor, free factors, or inconsistent arguments.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        total_steps: int,
        strength: float = 0.6,
        start: float = 0.05,
        end: float = 0.4,
        release: bool = True,
        rewarm: bool = True,
        target_ranks: Mapping[str, int] | None = None,
        target_params: int | None = None,
    ) -> None:
        if not (isinstance(strength, (int, float)) and 0 <= strength < 1):
            raise ValueError(f"strength is a fraction of the largest singular value in [0, 1), got {strength!r}")
        if not 0 <= start < end <= 1:
            raise ValueError(f"need 0 <= start < end <= 1, got start={start}, end={end}")
        super().__init__(model, optimizer, total_steps, release=release, rewarm=rewarm, target_ranks=target_ranks,
                         target_params=target_params)
        self.strength, self.start, self.end = float(strength), start, end
        free = [k for k, (_, _, p) in self.tensors.items() if p.factor_kind != "orthogonal"]
        if free:
            raise ValueError(f"SpectralGMP needs orthogonal factors (then |m| are the singular values it is relative "
                             f"to); {', '.join(free)} have free factors: use strrnn.lowrank_rnn(model, "
                             "factors='orthogonal')")
        for _, _, p in self.tensors.values():
            p.hard = True  # the threshold is driven: no shrinkage of what survives
            p.relative = False  # the schedule sets the absolute threshold, relative to max|m| itself

    def relative_threshold(self) -> float:
        """The threshold of the current step as a fraction of each matrix's largest singular value."""
        peak = 1.0 if self.budgeted else self.strength
        return peak * cubic((self.steps / self.total_steps - self.start) / (self.end - self.start))

    def step(self) -> None:
        """Advance one optimizer step: move the thresholds, freeze what met its budget or reached ``end``."""
        self.steps += 1
        if self.done:
            return
        relative = self.relative_threshold()
        with torch.no_grad():
            for key, (module, name, p) in self.tensors.items():
                if key not in self.frozen:
                    p.threshold.set_alpha(relative * originals(module, name)[1].abs().max())
        was_done = self.done
        past_end = self.steps >= self.end * self.total_steps
        if self.target_ranks is not None:
            ranks = self.ranks()
            for key, target in self.target_ranks.items():
                if key not in self.frozen and (past_end or ranks[key] <= target):
                    self.freeze(key, target)
            if past_end:
                for key in set(self.tensors) - self.frozen:  # tensors without a target keep their learned rank
                    self.freeze(key, ranks[key])
        elif self.target_params is not None:
            if past_end or self.params() <= self.target_params:
                self.freeze_within_budget(from_cap=True)
        elif past_end:
            for key, rank in self.ranks().items():
                self.freeze(key, rank)
        self._mark_done(was_done)


class RankSchedule(SpectralGMP):
    """Deprecated name of :class:`SpectralGMP` (removed in strrnn 0.3): the driven schedule is spectral GMP, the
    baseline; STR, which learns its thresholds, is :class:`strrnn.STRRecipe`."""

    def __init__(self, *args, **kwargs) -> None:
        warnings.warn("strrnn.RankSchedule is deprecated: it is spectral GMP, now strrnn.SpectralGMP (same "
                      "arguments); STR with learned thresholds is strrnn.STRRecipe", FutureWarning, stacklevel=2)
        super().__init__(*args, **kwargs)
