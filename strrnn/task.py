"""The LightningModule that trains any classifier, dense or carrying STR: one engine for RNNs and CNNs.

The model is built and (optionally) parametrized outside; this module only owns the step logic, the loss,
accuracy, and the optimizer/scheduler built from :func:`strrnn.param_groups` — so the threshold recipe is the
library's default one, the same a plain PyTorch loop gets.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .curves import cosine
from .lightning_compat import lightning_class
from .low_rank import LowRankSTR
from .reporting import iter_str_tensors
from .threshold import STR_EPS, STR_LR, param_groups

__all__ = ["OptimConfig", "ClassificationTask", "ranks_frozen", "OPTIMIZERS", "SCHEDULERS"]

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("cosine", "constant", "step")


@dataclass
class OptimConfig:
    """Optimizer and schedule of a run (the CLI's flags of the same names)."""

    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-3
    threshold_decay: float | None = None
    threshold_lr: float | None = STR_LR
    threshold_eps: float | None = STR_EPS
    scheduler: str = "cosine"
    warmup_epochs: int = 0
    epochs: int = 10
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"unknown scheduler {self.scheduler!r}; choose one of {', '.join(SCHEDULERS)}")


def ranks_frozen(model: nn.Module) -> bool:
    """Whether every learned (thresholded) low-rank tensor of ``model`` has its rank frozen."""
    return all(p.min_rank == p.rank_cap for _, _, _, p in iter_str_tensors(model)
               if isinstance(p, LowRankSTR) and p.threshold is not None)


@lightning_class("LightningModule")
class ClassificationTask:
    """Cross-entropy classification of ``model(x) -> logits (batch, classes)`` with accuracy metrics.

    A ``pytorch_lightning.LightningModule``; for a ``lightning.pytorch`` Trainer use
    ``strrnn.lightning_compat.ClassificationTask`` (the same class on that package's base).

    Args:
        model: any ``nn.Module`` mapping a batch ``x`` to logits ``(batch, n_classes)``.
        optim: :class:`OptimConfig`.
        selectable: ``() -> bool``, whether the current epoch may become ``best.ckpt`` (logged as
            ``val_selection``: ``val_acc`` when selectable, ``val_acc - 2`` when not); ``None``: always.
    """

    def __init__(self, model: nn.Module, optim: OptimConfig, selectable: Callable[[], bool] | None = None) -> None:
        super().__init__()
        self.model = model
        self.optim = optim
        # when the budget is still moving (ranks not frozen, pruning schedule running), an epoch must not
        # become best.ckpt: the exported model has to carry the final budget. None: every epoch may.
        self.selectable = selectable
        # the step where the learning-rate schedule starts a new cycle (set by the low-rank recipe's callback)
        self.lr_restart: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _shared_step(self, batch, stage: str) -> torch.Tensor:
        x, y = batch
        logits = self.model(x)
        smoothing = self.optim.label_smoothing if stage == "train" else 0.0
        loss = F.cross_entropy(logits, y, label_smoothing=smoothing)
        acc = (logits.argmax(dim=-1) == y).float().mean()
        on_step = stage == "train"
        self.log(f"{stage}_loss", loss, prog_bar=True, on_step=on_step, on_epoch=True, sync_dist=True,
                 batch_size=len(y))
        self.log(f"{stage}_acc", acc, prog_bar=stage != "train", on_step=False, on_epoch=True, sync_dist=True,
                 batch_size=len(y))
        if stage == "val":
            eligible = self.selectable is None or self.selectable()
            # best.ckpt monitors this: val_acc in [0, 1] when eligible, val_acc - 2 in [-2, -1] when not
            self.log("val_selection", acc if eligible else acc - 2.0, on_step=False, on_epoch=True,
                     sync_dist=True, batch_size=len(y))
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._shared_step(batch, "test")

    def configure_optimizers(self):
        o = self.optim
        groups = param_groups(
            self.model, weight_decay=o.weight_decay, threshold_decay=o.threshold_decay,
            threshold_lr=o.threshold_lr, threshold_eps=o.threshold_eps,
        )
        if o.optimizer == "sgd":
            optimizer = torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=False)
        elif o.optimizer == "adamw":
            optimizer = torch.optim.AdamW(groups, lr=o.lr)
        else:
            optimizer = torch.optim.Adam(groups, lr=o.lr)
        if o.scheduler == "constant" and o.warmup_epochs == 0:
            return optimizer
        steps_per_epoch = max(1, self._steps_per_epoch())
        total = max(1, o.epochs * steps_per_epoch)
        warmup = o.warmup_epochs * steps_per_epoch

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            begin = warmup  # a restart (a low-rank recipe's re-warm at the freeze) begins a new cycle
            if self.lr_restart is not None and step >= self.lr_restart:
                begin = self.lr_restart
            if o.scheduler == "cosine":
                return cosine(step, begin, total)
            if o.scheduler == "step":
                return 0.1 ** int(3 * (step - begin) / max(1, total - begin))
            return 1.0

        # The schedule scales every group's lr, thresholds included: the threshold recipe then anneals too,
        # which settles the learned ranks toward the end of training.
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _steps_per_epoch(self) -> int:
        trainer = self.trainer
        if trainer is None:
            return 1
        return int(math.ceil(trainer.estimated_stepping_batches / max(1, trainer.max_epochs)))
