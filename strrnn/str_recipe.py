r"""Low-rank STR's training recipe for any loop: :class:`STRRecipe` — the thresholds are *learned*.

Every matrix carries :class:`strrnn.LowRankSTR`, :math:`W = A\,\mathrm{diag}(S(m, \alpha))\,B` with the soft threshold
:math:`S(m, \alpha) = \mathrm{sign}(m)\,\mathrm{relu}(|m| - \alpha)` and :math:`\alpha = g(s)` (``g = exp``), by default
taken relative to the spectrum's scale, :math:`\alpha = e^{s}\max_i|m_i|`. The threshold parameter ``s`` is trained
like any weight: the loss pulls it down (every survivor is shrunk by :math:`\alpha`, which costs accuracy) and its
L2 decay :math:`\lambda` pulls it up towards 0 (``s < 0``), which raises the threshold. :math:`\lambda` — the decay
of the ``"threshold"`` group of :func:`strrnn.param_groups` — is the one knob: a larger :math:`\lambda` cuts more.
Where the two pulls balance, each matrix has the rank the task can afford; STR decides *where* to cut.

The recipe adds what the learning needs around that, in three phases:

1. **search** (``0 … freeze_at`` of training): the thresholds learn; the decay on ``s`` may ramp up from 0 over
   the first ``decay_warmup`` of training (a gentler start; the ranks then fall gradually);
2. **freeze** (at ``freeze_at``): each matrix is fixed at the rank STR learned; with ``debias``, the soft
   threshold's shrinkage of the kept singular values then fades out over that fraction of training (the network
   adapts as it goes — the relaxed lasso's idea: the threshold selects, the selected are then refit without its
   bias); then every matrix is released into plain rank-``r`` factors with fresh optimizer state
   (:class:`strrnn.rank_budget.RankRecipe`);
3. **fine-tune** (the rest): fixed-rank training at the learned ranks, with its own learning-rate cycle
   (:meth:`lr_lambda`).

``freeze_at=None`` is the paper's recipe: no freeze, the thresholds learn to the end (use it with free factors, the
absolute threshold and the decay on ``m`` and ``s``: ``lowrank_rnn(model, factors="free")`` and
``param_groups(model, threshold_decay=λ)``).

**Budgets.** ``target_params`` (or ``target_ranks``) says *how much* to cut; STR still decides where: a controller
raises :math:`\lambda` while the model is behind a budget path (from dense to the budget along GMP's cubic curve,
reached at ``freeze_at``) and lowers it while ahead, and each matrix (ranks) or the whole model (parameters) is
frozen as soon as its learned ranks meet the budget. Only if the budget is not met by ``freeze_at`` are the ranks cut
to it by magnitude (:func:`strrnn.rank_budget.ranks_for_params`); :attr:`STRRecipe.budget_met_by_str` says which.

Plain PyTorch::

    strrnn.lowrank_rnn(model, factors="orthogonal", relative=True)
    opt = torch.optim.Adam(strrnn.param_groups(model, weight_decay=1e-3, threshold_decay=λ), lr=1e-3)
    recipe = strrnn.STRRecipe(model, opt, total_steps=epochs * len(loader))
    lr = torch.optim.lr_scheduler.LambdaLR(opt, recipe.lr_lambda)   # cosine, restarted at the release after the freeze
    for epoch in range(epochs):
        for x, y in loader:
            opt.zero_grad(); F.cross_entropy(model(x), y).backward(); opt.step()
            recipe.step(); lr.step()
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from .curves import cubic
from .rank_budget import RankRecipe
from .threshold import threshold_group

__all__ = ["STRRecipe"]

# The budget controller moves log(λ) by GAIN × (relative lag behind the budget path) over the search: a lag of 10%
# of the dense parameters held through the whole search multiplies λ by e^(40·0.1) ≈ 55.
_GAIN = 40.0
_MAX_DECAY = 1e4


class STRRecipe(RankRecipe):
    """Learned low-rank STR: decay warm-up, budget control, freeze and release of every low-rank STR tensor.

    Call :meth:`step` once after every optimizer step; checkpoint it with :meth:`state_dict`.

    Args:
        model: a module carrying :class:`strrnn.LowRankSTR` tensors with thresholds.
        optimizer: the optimizer over ``model``'s parameters built with :func:`strrnn.param_groups` (its
            ``"threshold"`` group's weight decay is λ); needed for ``decay_warmup`` and budgets.
        total_steps: optimizer steps of the whole training run.
        freeze_at: fraction of training where the ranks are frozen; ``None``: never (the paper).
        decay_warmup: fraction of training over which the decay on ``s`` ramps up linearly from 0 (0: none).
        debias: fraction of training, after the ranks are frozen, over which the kept entries' shrinkage fades
            (:attr:`strrnn.LowRankSTR.shrink` from 1 to 0) before the release (0: release at once).
        release, rewarm, target_ranks, target_params: see :class:`strrnn.rank_budget.RankRecipe`.

    Raises:
        ValueError: no thresholded low-rank tensor, a budget without ``freeze_at``, a budget or warm-up without an
            optimizer that has a ``"threshold"`` group, or arguments out of range.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        total_steps: int,
        freeze_at: float | None = 0.4,
        decay_warmup: float = 0.0,
        debias: float = 0.0,
        release: bool = True,
        rewarm: bool = True,
        target_ranks: Mapping[str, int] | None = None,
        target_params: int | None = None,
    ) -> None:
        super().__init__(model, optimizer, total_steps, release=release, rewarm=rewarm, target_ranks=target_ranks,
                         target_params=target_params)
        if freeze_at is not None and not 0 < freeze_at <= 1:
            raise ValueError(f"freeze_at is a fraction of training in (0, 1] or None, got {freeze_at!r}")
        if not 0 <= decay_warmup <= 1:
            raise ValueError(f"decay_warmup is a fraction of training in [0, 1], got {decay_warmup!r}")
        if self.budgeted and freeze_at is None:
            raise ValueError("a budget (target_ranks / target_params) needs a freeze point: give freeze_at")
        if not 0 <= debias <= 1 or (debias and (freeze_at is None or freeze_at + debias > 1)):
            raise ValueError(f"debias is a fraction of training after freeze_at (freeze_at + debias <= 1), got "
                             f"{debias!r} with freeze_at={freeze_at!r}")
        self.freeze_at, self.decay_warmup, self.debias = freeze_at, float(decay_warmup), float(debias)
        self.ranks_final_at: int | None = None  # with debias: the step every rank was frozen (the fade starts)
        self.released_at: int | None = None  # with debias: the step every tensor was released (the fade ended)
        group = threshold_group(optimizer)
        if group is None and (self.budgeted or self.decay_warmup > 0):
            raise ValueError("budgets and decay_warmup act on the optimizer's 'threshold' group: build the optimizer "
                             "from strrnn.param_groups(model, ...) and pass it")
        # λ: the threshold group's decay as built (the controller moves it; the warm-up scales it)
        self.decay = float(group["weight_decay"]) if group is not None else None
        self.budget_met_by_str: bool | None = None  # with a budget: whether STR's own ranks met it
        self._set_decay()  # the first optimizer step already sees the warm-up's start

    @property
    def freeze_step(self) -> int | None:
        """The optimizer step at which every rank is frozen at the latest (None: never)."""
        return None if self.freeze_at is None else max(1, round(self.freeze_at * self.total_steps))

    def budget_path(self) -> float:
        """Where the parameters should be at the current step: from dense to the budget along GMP's cubic curve,
        reached at :attr:`freeze_step` (the controller's reference)."""
        dense, target = self.dense_params(), self.target()
        return dense - (dense - target) * cubic(self.steps / self.freeze_step)

    @property
    def restart_step(self) -> int | None:
        """The step where the learning-rate cycle restarts: where every tensor is released (with ``rewarm``)."""
        if not self.debias:
            return super().restart_step
        return self.released_at if self.rewarm else None

    def state_dict(self) -> dict:
        """Steps, frozen tensors, the controller's λ, whether STR met the budget, the debias phase."""
        return {**super().state_dict(), "decay": self.decay, "budget_met_by_str": self.budget_met_by_str,
                "ranks_final_at": self.ranks_final_at, "released_at": self.released_at}

    def load_state_dict(self, state: Mapping) -> None:
        """Restore :meth:`state_dict`."""
        super().load_state_dict(state)
        if state.get("decay") is not None:
            self.decay = float(state["decay"])
        self.budget_met_by_str = state.get("budget_met_by_str")
        self.ranks_final_at, self.released_at = state.get("ranks_final_at"), state.get("released_at")
        self._set_decay()

    def step(self) -> None:
        """Advance one optimizer step: set the decay of ``s`` (warm-up, controller), freeze what met its budget or
        reached ``freeze_at``."""
        self.steps += 1
        if self.done:
            if self.debias and self.released_at is None:
                self._fade()
            return
        was_done = self.done
        past_freeze = self.freeze_step is not None and self.steps >= self.freeze_step
        if self.budgeted:
            self._control(past_freeze)
        elif past_freeze:
            for key, rank in self.ranks().items():
                self.freeze(key, rank)
        self._set_decay()
        self._mark_done(was_done)
        if self.done and self.debias:
            self.ranks_final_at = self.steps

    def freeze(self, key: str, rank: int, release: bool | None = None) -> None:
        """As :meth:`strrnn.rank_budget.RankRecipe.freeze`; with ``debias`` the release waits for the fade."""
        super().freeze(key, rank, release=False if self.debias else release)

    def _fade(self) -> None:
        """The debias phase: the kept entries' shrinkage falls linearly to 0, then every tensor is released."""
        length = max(1, round(self.debias * self.total_steps))
        progress = min(1.0, (self.steps - self.ranks_final_at) / length)
        for _, _, p in self.tensors.values():
            p.set_shrink(1.0 - progress)
        if progress >= 1.0:
            if self.release:
                for key in sorted(self.tensors):
                    self.release_tensor(key)
            self.released_at = self.steps

    def _control(self, past_freeze: bool) -> None:
        ranks = self.ranks()
        if self.target_ranks is not None:
            for key, target in self.target_ranks.items():
                if key not in self.frozen and ranks[key] <= target:
                    self.freeze(key, target)
        elif self.params(ranks) <= self.target_params:
            self.freeze_within_budget()  # STR's own ranks, already within the budget
        if self.done:
            self.budget_met_by_str = True
            return
        if past_freeze:
            self.budget_met_by_str = False
            if self.target_ranks is not None:
                for key in sorted(set(self.tensors) - self.frozen):
                    self.freeze(key, self.target_ranks.get(key, ranks[key]))
            else:
                self.freeze_within_budget()
            return
        lag = (self.params(ranks) - self.budget_path()) / self.dense_params()
        self.decay = min(_MAX_DECAY, self.decay * math.exp(_GAIN * lag / self.freeze_step))

    def _set_decay(self) -> None:
        group = threshold_group(self.optimizer)
        if group is None or self.decay is None:
            return
        ramp = min(1.0, self.steps / (self.decay_warmup * self.total_steps)) if self.decay_warmup > 0 else 1.0
        group["weight_decay"] = self.decay * ramp
