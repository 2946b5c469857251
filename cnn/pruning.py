"""Pruning baselines for STR's budgets: gradual magnitude pruning (GMP), DNW, one-shot magnitude pruning.

All three act through ``torch.nn.utils.parametrize`` on a layer's ``weight``, so ``module.weight`` is
always the effective (masked) weight — what ``cnn.flops.profile`` counts — and the masks live in
the state dict (``parametrizations.weight.0.mask``):

- :class:`MagnitudeMask` — ``W_eff = W ⊙ mask`` with a fixed 0/1 buffer (GMP and one-shot pruning).
- :class:`GMPScheduler` — Zhu & Gupta (2017) gradual pruning: at steps ``t0, t0 + Δt, …, t_end`` each
  layer's mask keeps the largest-magnitude surviving weights so that its sparsity is
  ``s_f + (s_i − s_f)·(1 − (t − t0)/(t_end − t0))³`` (exactly, up to rounding of one weight). Call
  ``scheduler.step(step)`` once per training step in a plain loop; :class:`GMPCallback` does it in
  Lightning. Pruned weights stay pruned (the mask only shrinks).
- :class:`DNWTopK` — Discovering Neural Wirings (Wortsman et al. 2019): the forward pass keeps the
  top-``(1 − s)`` weights by magnitude, recomputed every step; the backward pass is straight-through
  (every weight gets the gradient of its effective weight), so pruned weights can come back.

Per-layer targets come from a budget (``cnn.budget``): uniform, ERK, or an STR run's ``report.csv``.
Register masks *before* building the optimizer (the callbacks do it in ``setup``), and call
:func:`fold_masks` (or ``strrnn.export``) to get plain modules with exact zeros.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import pytorch_lightning as pl
import torch
from torch import nn
from torch.nn.utils import parametrize

from cnn.budget import load_budget, prunable_layers, resolve_budget, uniform_budget
from strrnn.curves import cubic

__all__ = [
    "DNWTopK",
    "GMPCallback",
    "GMPScheduler",
    "MagnitudeMask",
    "apply_dnw",
    "apply_magnitude_pruning",
    "cubic_sparsity",
    "fold_masks",
    "layer_sparsity",
    "magnitude_mask",
]


def cubic_sparsity(
    step: int, final_sparsity: float, begin_step: int, end_step: int, initial_sparsity: float = 0.0
) -> float:
    """Zhu & Gupta's schedule: ``s_f + (s_i − s_f)·(1 − (t − t0)/(t_end − t0))³``, held at ``s_i`` before
    ``t0 = begin_step`` and at ``s_f`` from ``t_end = end_step`` on. Fractions in [0, 1]."""
    if end_step <= begin_step:
        return final_sparsity if step >= begin_step else initial_sparsity
    if step < begin_step:
        return initial_sparsity
    return initial_sparsity + (final_sparsity - initial_sparsity) * cubic((step - begin_step) / (end_step - begin_step))


def magnitude_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Boolean mask (same shape as ``weight``) keeping the ``n − round(n·sparsity)`` largest ``|weight|``.

    The count is exact (ties are broken by index), so a layer's sparsity is ``round(n·s)/n``.
    """
    numel = weight.numel()
    keep = numel - int(round(numel * sparsity))
    mask = torch.zeros(numel, dtype=torch.bool, device=weight.device)
    if keep > 0:
        mask[torch.topk(weight.detach().abs().flatten(), keep, sorted=False).indices] = True
    return mask.view_as(weight)


class MagnitudeMask(nn.Module):
    """Parametrization ``W_eff = W ⊙ mask`` with a 0/1 buffer ``mask`` shaped like ``W`` (starts all ones)."""

    def __init__(self, shape: torch.Size | tuple[int, ...], device=None, dtype=None) -> None:
        super().__init__()
        self.register_buffer("mask", torch.ones(shape, device=device, dtype=dtype or torch.float32))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        """``weight (any shape)`` → ``weight * mask`` (same shape)."""
        return weight * self.mask.to(weight.dtype)

    @torch.no_grad()
    def prune_to(self, original: torch.Tensor, sparsity: float) -> None:
        """Keep the largest surviving ``|original|`` entries so that the layer's sparsity is ``sparsity``."""
        surviving = original * self.mask.to(original.dtype)  # pruned weights score 0: they stay pruned
        self.mask.copy_(magnitude_mask(surviving, sparsity))

    @property
    def sparsity(self) -> float:
        """Fraction of mask entries that are zero."""
        return 1.0 - float(self.mask.count_nonzero()) / self.mask.numel()


class DNWTopK(nn.Module):
    """DNW parametrization: ``W_eff = W ⊙ topk_mask(|W|, 1 − sparsity)`` forward, identity gradient backward.

    ``sparsity`` is a fraction in [0, 1]; the mask is recomputed at every access of ``module.weight``.
    """

    def __init__(self, sparsity: float) -> None:
        super().__init__()
        if not 0.0 <= sparsity <= 1.0:
            raise ValueError(f"DNW sparsity must be a fraction in [0, 1], got {sparsity!r}")
        self.sparsity = float(sparsity)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        """``weight (any shape)`` → top-k masked weight; ``dW_eff/dW`` is the identity (straight-through)."""
        dropped = ~magnitude_mask(weight, self.sparsity)
        # value: W with the dropped entries zeroed; gradient: flows to every entry of W unchanged
        return weight - (weight * dropped).detach()

    def extra_repr(self) -> str:
        return f"sparsity={self.sparsity:.4f}"


def _targets(model: nn.Module, targets: float | Mapping[str, float], include, exclude) -> dict[str, float]:
    if isinstance(targets, Mapping):
        return resolve_budget(model, targets)
    return uniform_budget(model, float(targets), include, exclude)


def _register(model: nn.Module, targets: Mapping[str, float], make) -> dict[str, nn.Module]:
    modules = dict(model.named_modules())
    registered = {}
    for name in targets:
        module = modules[name]
        if parametrize.is_parametrized(module, "weight"):
            raise ValueError(
                f"{name}.weight already carries a parametrization "
                f"({type(module.parametrizations.weight[0]).__name__}); prune a dense model"
            )
        parametrization = make(name, module.weight)
        parametrize.register_parametrization(module, "weight", parametrization)
        registered[name] = parametrization
    return registered


def apply_magnitude_pruning(
    model: nn.Module,
    targets: float | Mapping[str, float],
    include: Iterable[str] | None = None,
    exclude: Iterable[str] | None = None,
) -> dict[str, MagnitudeMask]:
    """One-shot magnitude pruning: a :class:`MagnitudeMask` on each target layer, pruned to its sparsity now.

    ``targets``: one fraction for every selected Conv/Linear layer (uniform magnitude pruning), or a
    budget ``{path: fraction}``. Returns ``{path: MagnitudeMask}``.
    """
    targets = _targets(model, targets, include, exclude)
    masks = _register(model, targets, lambda name, w: MagnitudeMask(w.shape, device=w.device))
    modules = dict(model.named_modules())
    for name, mask in masks.items():
        mask.prune_to(modules[name].parametrizations.weight.original, targets[name])
    return masks


def apply_dnw(
    model: nn.Module,
    targets: float | Mapping[str, float],
    include: Iterable[str] | None = None,
    exclude: Iterable[str] | None = None,
) -> dict[str, DNWTopK]:
    """Register :class:`DNWTopK` on each target layer (a uniform fraction or a budget ``{path: fraction}``).

    Returns ``{path: DNWTopK}``. Build the optimizer afterwards.
    """
    targets = _targets(model, targets, include, exclude)
    return _register(model, targets, lambda name, w: DNWTopK(targets[name]))


class GMPScheduler:
    """Gradual magnitude pruning on the cubic schedule, for a plain training loop.

    ``targets``: the final sparsity, one fraction for every selected layer or a budget
    ``{path: fraction}`` (e.g. ``cnn.budget.load_budget(str_run_dir)``). Masks are registered on
    construction (build the optimizer afterwards) and updated by :meth:`step` at steps
    ``begin_step + j·frequency`` up to ``end_step``, and once more at the first step ≥ ``end_step``.

        scheduler = GMPScheduler(model, 0.9, begin_step=0, end_step=10_000, frequency=100)
        for step, batch in enumerate(loader):
            scheduler.step(step)          # before the forward pass
            loss = ...; loss.backward(); optimizer.step()
    """

    def __init__(
        self,
        model: nn.Module,
        targets: float | Mapping[str, float],
        begin_step: int,
        end_step: int,
        frequency: int = 100,
        initial_sparsity: float = 0.0,
        include: Iterable[str] | None = None,
        exclude: Iterable[str] | None = None,
    ) -> None:
        if frequency < 1:
            raise ValueError(f"frequency must be >= 1 step, got {frequency!r}")
        if end_step < begin_step or begin_step < 0:
            raise ValueError(
                f"need 0 <= begin_step <= end_step, got begin_step={begin_step}, end_step={end_step}"
            )
        self.model = model
        self.targets = _targets(model, targets, include, exclude)
        self.begin_step, self.end_step, self.frequency = int(begin_step), int(end_step), int(frequency)
        self.initial_sparsity = float(initial_sparsity)
        self.masks = _register(model, self.targets, lambda name, w: MagnitudeMask(w.shape, device=w.device))
        self._modules = dict(model.named_modules())
        self.last_update: int | None = None

    def sparsity_at(self, step: int) -> dict[str, float]:
        """The scheduled sparsity fraction of every target layer at ``step``: ``{path: fraction}``."""
        return {
            name: cubic_sparsity(
                step, final, self.begin_step, self.end_step, min(self.initial_sparsity, final)
            )
            for name, final in self.targets.items()
        }

    def is_update_step(self, step: int) -> bool:
        """Whether :meth:`step` prunes at ``step``."""
        if step < self.begin_step:
            return False
        if step >= self.end_step:
            return self.last_update is None or self.last_update < self.end_step
        return (step - self.begin_step) % self.frequency == 0

    @torch.no_grad()
    def step(self, step: int) -> bool:
        """Prune every target layer to its scheduled sparsity at an update step; True if it did."""
        if not self.is_update_step(step):
            return False
        for name, sparsity in self.sparsity_at(step).items():
            self.masks[name].prune_to(self._modules[name].parametrizations.weight.original, sparsity)
        self.last_update = step
        return True

    def state_dict(self) -> dict:
        """Schedule state (the masks themselves are buffers in the model's state dict)."""
        return {"last_update": self.last_update}

    def load_state_dict(self, state: Mapping) -> None:
        """Restore :meth:`state_dict`."""
        self.last_update = state.get("last_update")


class GMPCallback(pl.Callback):
    """Lightning callback running :class:`GMPScheduler` on ``trainer.global_step`` before each training batch.

    ``targets``: a fraction for every layer, a budget ``{path: fraction}``, or a path to an STR run
    folder / ``report.csv`` (``--budget-from``). ``begin_step`` / ``end_step`` default to
    ``begin_fraction`` / ``end_fraction`` of ``trainer.estimated_stepping_batches``. Masks are
    registered in ``setup`` — before Lightning builds the optimizer and restores a checkpoint — so the
    masks resume with the model's state dict.
    """

    def __init__(
        self,
        targets,
        begin_step: int | None = None,
        end_step: int | None = None,
        frequency: int = 100,
        begin_fraction: float = 0.05,
        end_fraction: float = 0.75,
        initial_sparsity: float = 0.0,
        include: Iterable[str] | None = None,
        exclude: Iterable[str] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(targets, str) or hasattr(targets, "__fspath__"):
            targets = load_budget(targets)
        self.targets, self.include, self.exclude = targets, include, exclude
        self.begin_step, self.end_step, self.frequency = begin_step, end_step, frequency
        self.begin_fraction, self.end_fraction = begin_fraction, end_fraction
        self.initial_sparsity = initial_sparsity
        self.scheduler: GMPScheduler | None = None
        self._pending_state: Mapping | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # masks now, before Lightning restores a checkpoint into them and builds the optimizer; the
        # schedule's steps are resolved in on_train_start, once the run length is known
        if stage != "fit" or self.scheduler is not None:
            return
        self.scheduler = GMPScheduler(
            pl_module,
            self.targets,
            begin_step=0,
            end_step=0,
            frequency=self.frequency,
            initial_sparsity=self.initial_sparsity,
            include=self.include,
            exclude=self.exclude,
        )
        if self._pending_state is not None:
            self.scheduler.load_state_dict(self._pending_state)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        total = None
        if self.begin_step is None or self.end_step is None:
            total = float(trainer.estimated_stepping_batches)
            if not math.isfinite(total):
                raise ValueError("GMPCallback needs begin_step and end_step when the run length is unknown")
        begin = self.begin_step if self.begin_step is not None else int(self.begin_fraction * total)
        end = self.end_step if self.end_step is not None else max(begin, int(self.end_fraction * total))
        if end < begin:
            raise ValueError(f"GMPCallback: end_step {end} is before begin_step {begin}")
        self.scheduler.begin_step, self.scheduler.end_step = begin, end

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int
    ) -> None:
        if self.scheduler.step(trainer.global_step):
            # one figure, not one column per layer: the per-layer table is cnn.flops.profile at the end
            masks = self.scheduler.masks.values()
            pruned = sum(mask.mask.numel() - int(mask.mask.count_nonzero()) for mask in masks)
            total = sum(mask.mask.numel() for mask in masks)
            pl_module.log("gmp_sparsity", 100.0 * pruned / total, on_step=True, on_epoch=False)

    def state_dict(self) -> dict:
        return self.scheduler.state_dict() if self.scheduler is not None else {}

    def load_state_dict(self, state_dict: Mapping) -> None:
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state_dict)
        else:
            self._pending_state = state_dict


def layer_sparsity(
    model: nn.Module, include: Iterable[str] | None = None, exclude: Iterable[str] | None = None
) -> dict[str, float]:
    """Fraction of zeros in each Conv/Linear layer's effective weight: ``{path: fraction}``."""
    with torch.no_grad():
        return {
            name: 1.0 - float(module.weight.count_nonzero()) / module.weight.numel()
            for name, module in prunable_layers(model, include, exclude).items()
        }


def fold_masks(model: nn.Module) -> nn.Module:
    """Remove every :class:`MagnitudeMask` / :class:`DNWTopK` parametrization in place, writing the masked
    weight (exact zeros) back as a plain Parameter. Returns ``model``."""
    for module in list(model.modules()):
        if not parametrize.is_parametrized(module, "weight"):
            continue
        chain = module.parametrizations.weight
        if all(isinstance(p, MagnitudeMask | DNWTopK) for p in chain):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    return model
