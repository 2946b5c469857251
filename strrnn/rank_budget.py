"""What every low-rank recipe shares: the tensors it owns, their ranks and budget, and the freeze.

A recipe (:class:`strrnn.STRRecipe`, learned thresholds; :class:`strrnn.SpectralGMP`, driven ones) searches the
ranks for part of training, then *freezes* each matrix at its rank and *releases* it
(:meth:`strrnn.LowRankSTR.release`): re-factored as plain rank-``r`` factors, no threshold left to shrink it, the
optimizer's state of its tensors dropped — the rest of training is fixed-rank training at the found ranks, started
from the searched model, with a learning-rate cycle of its own (:meth:`RankRecipe.lr_lambda`). :class:`RankRecipe`
is that shared machinery; :func:`ranks_for_params` cuts ranks to a parameter budget.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from .curves import cosine
from .factored import low_rank_params, originals
from .low_rank import LowRankSTR
from .reporting import iter_str_tensors

__all__ = ["RankRecipe", "ranks_for_params"]


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


class RankRecipe:
    """The low-rank tensors of ``model`` that a recipe owns, their budget, and the freeze-and-release.

    Subclasses implement :meth:`step` (call it once after every optimizer step) and use :meth:`freeze`.

    Args:
        model: a module carrying :class:`strrnn.LowRankSTR` tensors with thresholds.
        optimizer: the optimizer over ``model``'s parameters (its state of released tensors is reset), or None.
        total_steps: optimizer steps of the whole training run.
        release: at the freeze, re-factor as plain rank-``r`` factors (:meth:`LowRankSTR.release`); ``False``
            keeps the frozen STR parametrization.
        rewarm: restart the learning-rate cycle once every rank is frozen (:meth:`lr_lambda`).
        target_ranks: ``{path.tensor: rank}`` (paths as :func:`strrnn.report` gives them) — a rank budget.
        target_params: total exported parameters of the low-rank tensors — a parameter budget.

    Raises:
        ValueError: no thresholded low-rank tensor, or inconsistent budgets.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None, total_steps: int,
                 release: bool = True, rewarm: bool = True, target_ranks: Mapping[str, int] | None = None,
                 target_params: int | None = None) -> None:
        if not isinstance(total_steps, int) or total_steps < 1:
            raise ValueError(f"total_steps must be a positive integer, got {total_steps!r}")
        if target_ranks is not None and target_params is not None:
            raise ValueError("give either target_ranks or target_params, not both")
        self.model, self.optimizer, self.total_steps = model, optimizer, total_steps
        self.release, self.rewarm = release, rewarm
        self.tensors = {f"{path}.{name}": (module, name, p) for path, module, name, p in iter_str_tensors(model)
                        if isinstance(p, LowRankSTR) and p.threshold is not None}
        if not self.tensors:
            raise ValueError(f"{type(self).__name__} found no low-rank STR tensor with a threshold; apply "
                             "strrnn.lowrank_rnn(model, ...) (or strrnn.lowrank) first")
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
            if self.floor_params() > target_params:
                raise ValueError(f"target_params={target_params} is below what min_rank keeps "
                                 f"({self.floor_params()})")
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
        """Whether a budget (``target_ranks`` or ``target_params``) sets how much is cut."""
        return self.target_ranks is not None or self.target_params is not None

    def ranks(self) -> dict[str, int]:
        """Current rank of every tensor."""
        return {k: p.rank_of(originals(m, n)[1]) for k, (m, n, p) in self.tensors.items()}

    def params(self, ranks: Mapping[str, int] | None = None) -> int:
        """Exported parameters of the tensors at ``ranks`` (default: their current ranks)."""
        ranks = self.ranks() if ranks is None else ranks
        return sum(low_rank_params(*self.tensors[k][2].matrix_shape, r) for k, r in ranks.items())

    def dense_params(self) -> int:
        """Exported parameters of the tensors at full rank."""
        return self.params({k: p.max_rank for k, (_, _, p) in self.tensors.items()})

    def floor_params(self) -> int:
        """Exported parameters at every tensor's ``min_rank`` (at least 1): the smallest reachable budget."""
        return self.params({k: max(p.min_rank, 1) for k, (_, _, p) in self.tensors.items()})

    def target(self) -> int | None:
        """The parameter budget: ``target_params``, or what ``target_ranks`` cost (untargeted tensors at full
        rank); None without a budget."""
        if self.target_params is not None:
            return self.target_params
        if self.target_ranks is not None:
            return self.params({k: self.target_ranks.get(k, p.max_rank) for k, (_, _, p) in self.tensors.items()})
        return None

    @property
    def restart_step(self) -> int | None:
        """The step where the learning-rate cycle restarts (``rewarm`` and every rank frozen), else None."""
        return self.frozen_at if self.rewarm and self.done else None

    def lr_lambda(self, step: int) -> float:
        """Cosine learning-rate factor for ``torch.optim.lr_scheduler.LambdaLR(optimizer, recipe.lr_lambda)``:
        from 1 to 0 over training, restarted at 1 when the ranks freeze (with ``rewarm``)."""
        restart = self.restart_step
        return cosine(step, restart if restart is not None and step >= restart else 0, self.total_steps)

    def state_dict(self) -> dict:
        """Steps taken and tensors frozen (the thresholds and released factors live in the model)."""
        return {"steps": self.steps, "frozen": sorted(self.frozen), "frozen_at": self.frozen_at}

    def load_state_dict(self, state: Mapping) -> None:
        """Restore :meth:`state_dict`."""
        self.steps = int(state["steps"])
        self.frozen = set(state.get("frozen", ())) & set(self.tensors)
        self.frozen_at = state.get("frozen_at")

    # -- the freeze -----------------------------------------------------------------------------------------
    def step(self) -> None:  # pragma: no cover - the subclasses define it
        raise NotImplementedError

    def freeze(self, key: str, rank: int, release: bool | None = None) -> None:
        """Fix tensor ``key`` at ``rank`` (at least its ``min_rank`` and 1) and, with ``release`` (default: the
        recipe's), re-factor it as plain factors (:meth:`release_tensor`)."""
        module, name, p = self.tensors[key]
        p.freeze_rank(max(int(rank), p.min_rank, 1))
        if self.release if release is None else release:
            self.release_tensor(key)
        self.frozen.add(key)

    def release_tensor(self, key: str) -> None:
        """Re-factor tensor ``key`` (frozen) as plain factors and drop the optimizer's state of its tensors (their
        meaning changed)."""
        module, name, p = self.tensors[key]
        p.release(*originals(module, name))
        if self.optimizer is not None:
            for tensor in (*originals(module, name), p.threshold.s):
                self.optimizer.state.pop(tensor, None)

    def freeze_within_budget(self, from_cap: bool = False) -> None:
        """Freeze every tensor not yet frozen, within the parameter budget ``target_params`` (if any).

        The ranks start from the current ones (``from_cap``: from each tensor's cap, the whole spectrum — what a
        driven hard threshold cut may come back) and are lowered by :func:`ranks_for_params` where their total
        exceeds the budget: the weakest directions relative to their matrix's largest go first, so the model lands
        within one rank step below the budget.
        """
        current = self.ranks()
        ranks = {k: (p.rank_cap if from_cap and k not in self.frozen else current[k])
                 for k, (_, _, p) in self.tensors.items()}
        if self.target_params is not None:
            spectra = {k: originals(m, n)[1] for k, (m, n, _) in self.tensors.items()}
            shapes = {k: p.matrix_shape for k, (_, _, p) in self.tensors.items()}
            floors = {k: (current[k] if k in self.frozen else max(p.min_rank, 1))
                      for k, (_, _, p) in self.tensors.items()}
            ranks = ranks_for_params(spectra, shapes, ranks, self.target_params, floors)
        for key in sorted(set(self.tensors) - self.frozen):
            self.freeze(key, ranks[key])

    def _mark_done(self, was_done: bool) -> None:
        if self.done and not was_done:
            self.frozen_at = self.steps
