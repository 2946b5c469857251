r"""The rank-learning recipe as one object for any training loop: :class:`RankSchedule`.

Low-rank STR learns ranks by thresholding spectra; *how* the threshold moves decides whether the model that
comes out is any good. A weight-decay equilibrium (the paper's recipe) shrinks every surviving singular value
while it searches, and the model it leaves behind is a worse start than a fresh fixed-rank one (measured:
``benchmarks/parity``). The schedule here drives the threshold instead, relative to each matrix's own scale,
and cuts with a *hard* threshold, so the directions that survive keep their full value:

.. math::  \alpha_t = \text{strength}\cdot c(p_t)\cdot \max_i |m_i|, \qquad c(p) = 1 - (1 - p)^3,
           \qquad S(m) = m\cdot\mathbf 1[|m| > \alpha_t]

with :math:`p_t` going from 0 to 1 between the fractions ``start`` and ``end`` of training (GMP's cubic
schedule). With orthogonal factors :math:`|m_i|` are the singular values, so ``strength`` is the fraction of the
largest singular value below which directions are cut: one knob in ``[0, 1)``, larger cuts more. At ``end`` every
matrix is frozen at its rank and *released* (:meth:`strrnn.LowRankSTR.release`): re-factored as plain rank-``r``
factors from its SVD, no threshold left to shrink it, optimizer state reset — the rest of training is fixed-rank
training at the learned ranks, started from the searched model.

Budgets: ``target_ranks`` or ``target_params`` replace ``strength``; the threshold then climbs towards the largest
singular value and each matrix (ranks) or the whole model (parameters) is frozen as soon as it meets its budget,
at ``end`` at the latest (then cut to the budget by :func:`ranks_for_params`).

Plain PyTorch::

    strrnn.lowrank_rnn(model, factors="orthogonal")
    opt = torch.optim.Adam(strrnn.param_groups(model, weight_decay=1e-3), lr=1e-3)
    sched = strrnn.RankSchedule(model, opt, total_steps=epochs * len(loader), strength=0.6)
    lr = torch.optim.lr_scheduler.LambdaLR(opt, sched.lr_lambda)   # cosine, restarted when the ranks freeze
    for epoch in range(epochs):
        for x, y in loader:
            opt.zero_grad(); F.cross_entropy(model(x), y).backward(); opt.step()
            sched.step(); lr.step()
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from .factored import low_rank_params, originals
from .low_rank import LowRankSTR
from .reporting import iter_str_tensors

__all__ = ["RankSchedule", "cubic", "ranks_for_params"]


def cubic(progress: float) -> float:
    """GMP's schedule: ``1 - (1 - p)^3`` for ``p`` clamped to ``[0, 1]``."""
    p = min(1.0, max(0.0, progress))
    return 1.0 - (1.0 - p) ** 3


def ranks_for_params(
    spectra: Mapping[str, torch.Tensor], shapes: Mapping[str, tuple[int, int]], ranks: Mapping[str, int],
    target_params: int, floors: Mapping[str, int] | None = None,
) -> dict[str, int]:
    """Lower ``ranks`` until the exported parameters fit ``target_params``.

    One rank at a time is removed from the matrix whose weakest surviving direction is smallest relative to its
    largest (``spectra[key]``: magnitudes, any order) — the least useful direction of the whole model.

    Args:
        spectra: ``{key: (k,) magnitudes}``; shapes: ``{key: (out, in)}``; ranks: current ranks.
        target_params: budget for ``sum(low_rank_params(out, in, r))``.
        floors: smallest rank allowed per key (default 1).

    Returns:
        ``{key: rank}`` within budget, or at the floors when the budget is below them.
    """
    ranks = dict(ranks)
    floors = {k: 1 for k in ranks} if floors is None else dict(floors)
    ordered = {k: torch.sort(spectra[k].detach().abs().flatten(), descending=True).values for k in ranks}

    def total() -> int:
        return sum(low_rank_params(*shapes[k], r) for k, r in ranks.items())

    def weakness(key: str) -> float:
        r, spec = ranks[key], ordered[key]
        if r <= floors[key] or spec[0] <= 0:
            return math.inf
        return float(spec[min(r, spec.numel()) - 1] / spec[0])

    while total() > target_params:
        key = min(ranks, key=weakness)
        if weakness(key) == math.inf:
            break
        ranks[key] -= 1
    return ranks


class RankSchedule:
    """Drive, freeze and release the thresholds of every low-rank STR tensor of ``model``.

    Call :meth:`step` once after every optimizer step. Checkpoint it with :meth:`state_dict`.

    Args:
        model: a module carrying :class:`strrnn.LowRankSTR` with thresholds and orthogonal factors.
        optimizer: the optimizer over ``model``'s parameters (its state of released tensors is reset), or None.
        total_steps: optimizer steps of the whole training run.
        strength: final relative threshold in ``[0, 1)`` (fraction of the largest singular value); larger cuts more.
        start, end: fractions of ``total_steps`` where the threshold starts rising and where ranks are frozen.
        release: at the freeze, re-factor as plain rank-``r`` factors (:meth:`LowRankSTR.release`); ``False``
            keeps the frozen STR parametrization (its threshold stays at the frozen value).
        rewarm: restart the learning-rate schedule at the freeze (:meth:`lr_lambda`; the CLI's cosine does the
            same): the fine-tuning phase at the learned ranks gets a full learning-rate cycle of its own.
        target_ranks: ``{path.tensor: rank}`` (paths as :func:`strrnn.report` gives them) — a rank budget.
        target_params: total exported parameters of the low-rank tensors — a parameter budget.

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
        if not isinstance(total_steps, int) or total_steps < 1:
            raise ValueError(f"total_steps must be a positive integer, got {total_steps!r}")
        if not (isinstance(strength, (int, float)) and 0 <= strength < 1):
            raise ValueError(f"strength is a fraction of the largest singular value in [0, 1), got {strength!r}")
        if not 0 <= start < end <= 1:
            raise ValueError(f"need 0 <= start < end <= 1, got start={start}, end={end}")
        if target_ranks is not None and target_params is not None:
            raise ValueError("give either target_ranks or target_params, not both")
        self.model, self.optimizer = model, optimizer
        self.total_steps, self.strength, self.start, self.end = total_steps, float(strength), start, end
        self.release, self.rewarm = release, rewarm
        self.tensors = {f"{path}.{name}": (module, name, p) for path, module, name, p in iter_str_tensors(model)
                        if isinstance(p, LowRankSTR) and p.threshold is not None}
        for _, _, p in self.tensors.values():
            p.hard = True  # the schedule drives the thresholds: no shrinkage of what survives
        if not self.tensors:
            raise ValueError("RankSchedule found no low-rank STR tensor with a threshold; apply "
                             "strrnn.lowrank_rnn(model, factors='orthogonal') (or strrnn.lowrank) first")
        free = [k for k, (_, _, p) in self.tensors.items() if p.factor_kind != "orthogonal"]
        if free:
            raise ValueError(f"RankSchedule needs orthogonal factors (then |m| are the singular values it is relative "
                             f"to); {', '.join(free)} have free factors: use strrnn.lowrank_rnn(model, "
                             "factors='orthogonal')")
        self.target_ranks = dict(target_ranks) if target_ranks is not None else None
        self.target_params = target_params
        if self.target_ranks is not None:
            unknown = sorted(set(self.target_ranks) - set(self.tensors))
            if unknown:
                raise ValueError(f"target_ranks name unknown tensors {unknown}; low-rank tensors: "
                                 f"{sorted(self.tensors)}")
            for key, rank in self.target_ranks.items():
                p = self.tensors[key][2]
                if not p.min_rank <= rank <= p.max_rank:
                    raise ValueError(f"target rank {rank} for {key} is outside [{p.min_rank}, {p.max_rank}]")
        if target_params is not None:
            floor = sum(low_rank_params(*p.matrix_shape, p.min_rank) for _, _, p in self.tensors.values())
            if target_params < floor:
                raise ValueError(f"target_params={target_params} is below what min_rank keeps ({floor})")
        self.steps = 0
        self.frozen: set[str] = {k for k, (_, _, p) in self.tensors.items() if p.is_released}
        self.frozen_at: int | None = None  # the step at which the last tensor froze

    # -- state ----------------------------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        """Whether every tensor is frozen (its rank final)."""
        return len(self.frozen) == len(self.tensors)

    @property
    def budgeted(self) -> bool:
        return self.target_ranks is not None or self.target_params is not None

    def ranks(self) -> dict[str, int]:
        """Current rank of every scheduled tensor."""
        return {k: p.rank_of(originals(m, n)[1]) for k, (m, n, p) in self.tensors.items()}

    def params(self) -> int:
        """Exported parameters of the scheduled tensors at their current ranks."""
        return sum(low_rank_params(*self.tensors[k][2].matrix_shape, r) for k, r in self.ranks().items())

    def relative_threshold(self) -> float:
        """The threshold of the current step as a fraction of each matrix's largest singular value."""
        peak = 1.0 if self.budgeted else self.strength
        return peak * cubic((self.steps / self.total_steps - self.start) / (self.end - self.start))

    @property
    def restart_step(self) -> int | None:
        """The step where the learning-rate schedule restarts (``rewarm`` and every rank frozen), else None."""
        return self.frozen_at if self.rewarm and self.done else None

    def lr_lambda(self, step: int) -> float:
        """Cosine learning-rate factor for ``torch.optim.lr_scheduler.LambdaLR(optimizer, sched.lr_lambda)``:
        from 1 to 0 over training, restarted at 1 when the ranks freeze (with ``rewarm``)."""
        begin = self.restart_step if self.restart_step is not None and step >= self.restart_step else 0
        progress = min(1.0, (step - begin) / max(1, self.total_steps - begin))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    def state_dict(self) -> dict:
        """Steps taken and tensors frozen (the thresholds and released factors live in the model)."""
        return {"steps": self.steps, "frozen": sorted(self.frozen), "frozen_at": self.frozen_at}

    def load_state_dict(self, state: Mapping) -> None:
        """Restore :meth:`state_dict`."""
        self.steps = int(state["steps"])
        self.frozen = set(state.get("frozen", ())) & set(self.tensors)
        self.frozen_at = state.get("frozen_at")

    # -- the schedule ---------------------------------------------------------------------------------------
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
                    self._freeze(key, target)
            if past_end:
                for key in set(self.tensors) - self.frozen:  # tensors without a target keep their learned rank
                    self._freeze(key, ranks[key])
        elif self.target_params is not None:
            if past_end or self.params() <= self.target_params:
                # fill the budget from the top: the weakest directions (relative to their matrix's largest) go
                # first, so the frozen model lands within one rank step below the budget
                ranks = {k: p.rank_cap for k, (_, _, p) in self.tensors.items()}
                spectra = {k: originals(m, n)[1] for k, (m, n, _) in self.tensors.items()}
                shapes = {k: p.matrix_shape for k, (_, _, p) in self.tensors.items()}
                floors = {k: p.min_rank or 1 for k, (_, _, p) in self.tensors.items()}
                for key, rank in ranks_for_params(spectra, shapes, ranks, self.target_params, floors).items():
                    self._freeze(key, rank)
        elif past_end:
            for key, rank in self.ranks().items():
                self._freeze(key, rank)
        if self.done and not was_done:
            self.frozen_at = self.steps

    def _freeze(self, key: str, rank: int) -> None:
        module, name, p = self.tensors[key]
        rank = max(int(rank), p.min_rank, 1)
        p.freeze_rank(rank)
        if self.release:
            p.release(*originals(module, name))
            if self.optimizer is not None:  # the factors changed meaning: Adam's moments no longer apply
                for tensor in (*originals(module, name), p.threshold.s):
                    self.optimizer.state.pop(tensor, None)
        self.frozen.add(key)
