"""Lightning callbacks for the cross-cutting concerns of STR training.

* :class:`RankLogger` — per-epoch rank / sparsity / threshold of every STR tensor into ``ranks.csv``, and a
  warning when a threshold would remove every singular value (``min_rank`` holds).
* :class:`BudgetControl` — drive the run to a requested rank per tensor or a total parameter count, then freeze
  the ranks there (the paper's remedy for hitting an exact budget).
* :class:`FineTune` — freeze the learned ranks for the last part of training and fine-tune at them.
* :class:`ThresholdDecayWarmup` — ramp the threshold decay up over the first epochs (softens the cliff where a
  strong decay cuts every rank at once).
* :class:`NonFiniteLossGuard` — stop on a NaN/inf loss, naming epoch and step, before the optimizer step, so the
  last good checkpoint is kept.
* :class:`EpochSeed` — reseed every epoch from ``(seed, epoch)`` so a resumed run sees the same batches.
* :class:`AtomicCheckpointIO` — checkpoints written through a temporary file and ``os.replace``; loaded with
  ``weights_only=True``.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import random
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from .fileio import atomic_path, atomic_write_text, load_checkpoint_file
from .low_rank import LowRankSTR, originals
from .reporting import iter_str_tensors, low_rank_params, report

log = logging.getLogger("strrnn")

__all__ = [
    "RankLogger",
    "BudgetControl",
    "ThresholdDecayWarmup",
    "FineTune",
    "freeze_ranks_and_relax",
    "NonFiniteLossGuard",
    "NonFiniteLossError",
    "ResumableMetrics",
    "EpochSeed",
    "AtomicCheckpointIO",
    "atomic_write_text",
    "str_group",
]


def str_group(optimizer: torch.optim.Optimizer) -> dict | None:
    """The ``"threshold"`` parameter group built by :func:`strrnn.param_groups`, if any."""
    return next((g for g in optimizer.param_groups if g.get("name") == "threshold"), None)


def freeze_ranks_and_relax(pl_module, optimizer: torch.optim.Optimizer | None) -> dict[str, int]:
    """Freeze every low-rank tensor at its current rank and give spectra/thresholds the weights' decay.

    The start of a fine-tuning phase: with the ranks fixed, the strong threshold decay has nothing left to do
    but shrink the surviving spectrum, so it is relaxed to the decay of the weights. Returns the frozen ranks.
    """
    ranks = {}
    for path, module, name, p in iter_str_tensors(pl_module):
        if isinstance(p, LowRankSTR) and p.threshold is not None:
            rank = p.rank_of(originals(module, name)[1])
            p.freeze_rank(max(rank, p.min_rank))
            ranks[f"{path.removeprefix('model.')}.{name}"] = p.rank_cap
    if optimizer is not None:
        weights = next((g for g in optimizer.param_groups if g.get("name") == "weights"), None)
        decay = weights["weight_decay"] if weights is not None else 0.0
        for group in optimizer.param_groups:
            if group.get("name") in ("spectrum", "threshold"):
                group["weight_decay"] = decay
                group["base_weight_decay"] = decay
                group["frozen"] = True
    return ranks


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoint I/O that never leaves a half-written file and never unpickles arbitrary objects."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)

    def load_checkpoint(self, path, map_location=None, weights_only=None):
        return load_checkpoint_file(path, map_location)


class RankLogger(pl.Callback):
    """Append one row per STR tensor and epoch to ``path`` (CSV: epoch, module, tensor, mode, rank, sparsity,
    threshold, params) and log ``rank/<module>.<tensor>`` to the Lightning logger."""

    FIELDS = ["epoch", "module", "tensor", "mode", "rank", "sparsity", "threshold", "params"]

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._warned: set[str] = set()

    def on_train_start(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        # On resume (the checkpoint is restored by now), drop rows of epochs it has not completed.
        keep = []
        if self.path.exists():
            with self.path.open() as handle:
                keep = [row for row in csv.DictReader(handle) if int(row["epoch"]) < trainer.current_epoch]
        lines = [",".join(self.FIELDS)] + [",".join(row[f] for f in self.FIELDS) for row in keep]
        atomic_write_text(self.path, "\n".join(lines) + "\n")

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        table = report(pl_module)
        if table.empty:
            return
        if trainer.world_size > 1:
            self._check_synchronized(pl_module)
        rows = table[table["module"] != "total"]
        self._warn_if_threshold_covers_spectrum(pl_module)
        for _, row in rows.iterrows():
            key = f"{row['module'].removeprefix('model.')}.{row['tensor']}"
            value = row["rank"] if row["mode"] != "unstructured" else row["sparsity"]
            pl_module.log(f"rank/{key}" if row["mode"] != "unstructured" else f"sparsity/{key}", float(value),
                          on_epoch=True, sync_dist=False, rank_zero_only=True)
        if not trainer.is_global_zero:
            return
        with self.path.open("a") as handle:
            for _, row in rows.iterrows():
                values = [trainer.current_epoch, row["module"].removeprefix("model."), row["tensor"], row["mode"],
                          _fmt(row["rank"]), _fmt(row["sparsity"]), f"{row['threshold']:.6g}", int(row["params"])]
                handle.write(",".join(str(v) for v in values) + "\n")

    @staticmethod
    def _check_synchronized(pl_module) -> None:
        """Under DDP every process must hold the same thresholds (hence the same ranks)."""
        local = torch.cat([p.threshold.s.detach().flatten() for _, _, _, p in iter_str_tensors(pl_module)
                           if getattr(p, "threshold", None) is not None])
        gathered = pl_module.all_gather(local)
        if not torch.equal(gathered.min(dim=0).values, gathered.max(dim=0).values):
            raise RuntimeError("STR thresholds differ across processes; ranks would diverge")

    def _warn_if_threshold_covers_spectrum(self, pl_module) -> None:
        for path, module, name, p in iter_str_tensors(pl_module):
            if not isinstance(p, LowRankSTR) or p.threshold is None:
                continue
            key = f"{path}.{name}"
            with torch.no_grad():
                raw = float(p.threshold())
                top = float(originals(module, name)[1].abs().max())
            if raw >= top and key not in self._warned:
                self._warned.add(key)
                log.warning(
                    "threshold of %s (%.3g) exceeds every spectrum entry (largest %.3g): min_rank=%d keeps "
                    "the matrix alive; lower the decay or use --target-rank/--target-params",
                    key.removeprefix("model."), raw, top, p.min_rank,
                )


def _fmt(value) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:g}"


class ThresholdDecayWarmup(pl.Callback):
    """Scale the threshold group's weight decay linearly from 0 to its set value over the first ``epochs`` epochs.

    Stateless (derived from the global step), so it resumes exactly.
    """

    def __init__(self, epochs: float) -> None:
        if epochs < 0:
            raise ValueError(f"warm-up epochs must be >= 0, got {epochs}")
        self.epochs = epochs
        self._base: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        group = str_group(trainer.optimizers[0]) if trainer.optimizers else None
        if group is None or self.epochs == 0 or group.get("frozen"):
            return
        if self._base is None:
            self._base = group.setdefault("base_weight_decay", group["weight_decay"])
        steps_per_epoch = max(1, trainer.num_training_batches)
        progress = trainer.global_step / (self.epochs * steps_per_epoch)
        group["weight_decay"] = group["base_weight_decay"] * min(1.0, progress)


class BudgetControl(pl.Callback):
    """Drive low-rank STR to a budget, then freeze the ranks there.

    Args:
        target_ranks: ``{"<module path>.<tensor>": rank}`` (paths as in :func:`strrnn.report`, without the
            ``model.`` prefix of the Lightning module), or
        target_params: total parameters after export of all low-rank tensors.
        deadline: fraction of the training steps by which the budget must be reached; a tensor still above its
            target then is frozen at it (the largest spectrum entries survive). The rest of training fine-tunes
            at the frozen ranks.
        boost: factor by which the threshold decay grows at each epoch end while the run is behind a linear
            schedule from the dense size to the budget.

    Every tensor is frozen with :meth:`LowRankSTR.freeze_rank`, so the final ranks equal the targets exactly
    (``target_ranks``), or the total is at most ``target_params`` (within one rank step of a matrix).
    """

    def __init__(self, target_ranks: dict[str, int] | None = None, target_params: int | None = None,
                 deadline: float = 0.5, boost: float = 1.5) -> None:
        if (target_ranks is None) == (target_params is None):
            raise ValueError("BudgetControl needs exactly one of target_ranks or target_params")
        if not 0 < deadline <= 1:
            raise ValueError(f"deadline must be in (0, 1], got {deadline}")
        self.target_ranks = dict(target_ranks or {})
        self.target_params = target_params
        self.deadline = deadline
        self.boost = boost
        self.frozen = False

    def _tensors(self, pl_module) -> dict[str, tuple]:
        out = {}
        for path, module, name, p in iter_str_tensors(pl_module):
            if isinstance(p, LowRankSTR):
                out[f"{path.removeprefix('model.')}.{name}"] = (module, name, p)
        return out

    def setup(self, trainer, pl_module, stage: str) -> None:
        tensors = self._tensors(pl_module)
        if not tensors:
            raise ValueError("budget control needs low-rank STR tensors (use --mode lowrank)")
        unknown = sorted(set(self.target_ranks) - set(tensors))
        if unknown:
            raise ValueError(f"budget targets name unknown tensors {unknown}; low-rank tensors: {sorted(tensors)}")
        for key, rank in self.target_ranks.items():
            p = tensors[key][2]
            if not p.min_rank <= rank <= p.max_rank:
                raise ValueError(f"target rank {rank} for {key} is outside [{p.min_rank}, {p.max_rank}]")
        if self.target_params is not None:
            floor = sum(low_rank_params(*p.matrix_shape, p.min_rank) for _, _, p in tensors.values())
            if self.target_params < floor:
                raise ValueError(f"target_params={self.target_params} is below what min_rank keeps ({floor})")

    def _params(self, tensors) -> int:
        return sum(low_rank_params(*p.matrix_shape, p.rank_of(originals(m, n)[1])) for m, n, p in tensors.values())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.frozen:
            return
        tensors = self._tensors(pl_module)
        past_deadline = trainer.global_step >= self.deadline * trainer.estimated_stepping_batches
        if self.target_params is None:
            for key, target in self.target_ranks.items():
                module, name, p = tensors[key]
                if p.rank_cap == target and p.min_rank == target:
                    continue
                if past_deadline or p.rank_of(originals(module, name)[1]) <= target:
                    p.freeze_rank(target)
            self.frozen = all(tensors[k][2].rank_cap == t for k, t in self.target_ranks.items())
        elif past_deadline or self._params(tensors) <= self.target_params:
            self._freeze_to_params(tensors)
            self.frozen = True
        if self.frozen:
            freeze_ranks_and_relax(pl_module, trainer.optimizers[0] if trainer.optimizers else None)
            log.info("budget reached at step %d: ranks frozen at %s", trainer.global_step,
                     {k: p.rank_cap for k, (_, _, p) in tensors.items()})

    def _freeze_to_params(self, tensors) -> None:
        ranks = {k: p.rank_of(originals(m, n)[1]) for k, (m, n, p) in tensors.items()}
        shapes = {k: p.matrix_shape for k, (_, _, p) in tensors.items()}

        def total(rs):
            return sum(low_rank_params(*shapes[k], r) for k, r in rs.items())

        # Past the deadline and still over budget: remove ranks one at a time from the tensor whose
        # smallest surviving entry is weakest relative to its largest (the least useful direction).
        while total(ranks) > self.target_params:
            def weakness(key):
                module, name, p = tensors[key]
                spec = torch.sort(p.thresholded(originals(module, name)[1]).detach().abs(), descending=True).values
                r = ranks[key]
                return float(spec[r - 1] / spec[0]) if r > p.min_rank and spec[0] > 0 else math.inf
            key = min(ranks, key=weakness)
            if weakness(key) == math.inf:
                break
            ranks[key] -= 1
        for key, (_, _, p) in tensors.items():
            p.freeze_rank(ranks[key])

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.frozen or not trainer.optimizers:
            return
        group = str_group(trainer.optimizers[0])
        if group is None:
            return
        tensors = self._tensors(pl_module)
        dense = sum(low_rank_params(*p.matrix_shape, p.max_rank) for _, _, p in tensors.values())
        if self.target_params is not None:
            goal = self.target_params
        else:
            goal = sum(low_rank_params(*tensors[k][2].matrix_shape, r) for k, r in self.target_ranks.items())
            goal += sum(low_rank_params(*p.matrix_shape, p.max_rank) for k, (_, _, p) in tensors.items()
                        if k not in self.target_ranks)
        progress = trainer.global_step / max(1.0, self.deadline * trainer.estimated_stepping_batches)
        scheduled = dense - min(1.0, progress) * (dense - goal)
        if self._params(tensors) > scheduled:
            key = "base_weight_decay" if "base_weight_decay" in group else "weight_decay"
            group[key] = max(group[key], 1e-4) * self.boost
            if key == "base_weight_decay":
                group["weight_decay"] *= self.boost

    def state_dict(self) -> dict:
        return {"frozen": self.frozen}

    def load_state_dict(self, state_dict: dict) -> None:
        self.frozen = bool(state_dict.get("frozen", False))


class FineTune(pl.Callback):
    """Freeze the learned ranks for the last ``fraction`` of the epochs and fine-tune at them.

    STR's decay shrinks the spectrum while it searches for ranks, so its runs underfit; once the ranks are
    frozen the decay is relaxed to the weights' and the surviving directions recover (the recurrent twin of
    training at the budget STR found). Stateless: the frozen ranks live in the model, the relaxed decay in the
    optimizer, both checkpointed.
    """

    def __init__(self, fraction: float) -> None:
        if not 0 <= fraction < 1:
            raise ValueError(f"fine-tuning fraction must be in [0, 1), got {fraction}")
        self.fraction = fraction

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if self.fraction == 0 or trainer.current_epoch < round((1 - self.fraction) * trainer.max_epochs):
            return
        group = str_group(trainer.optimizers[0]) if trainer.optimizers else None
        if group is not None and group.get("frozen"):
            return
        ranks = freeze_ranks_and_relax(pl_module, trainer.optimizers[0] if trainer.optimizers else None)
        log.info("epoch %d: ranks frozen at %s; fine-tuning", trainer.current_epoch, ranks)


class NonFiniteLossError(RuntimeError):
    """Raised when the training loss, the validation loss or a parameter is NaN or infinite; the message names
    epoch and step."""


class NonFiniteLossGuard(pl.Callback):
    """Stop a run that diverged, so no NaN/inf reaches a checkpoint or the exported model.

    Checked: the training loss before every backward pass; every parameter after every optimizer step (a huge
    learning rate can overflow the weights while the loss, squashed by the cell's nonlinearities, stays finite);
    the validation loss at the end of every validation. Checkpoints are written after these checks, so the last
    checkpoint on disk is always a finite one.
    """

    def _stop(self, trainer, what: str) -> None:
        raise NonFiniteLossError(
            f"{what} at epoch {trainer.current_epoch}, step {trainer.global_step}; training stopped, the last good "
            "checkpoint is kept. Lower --lr or the decay, or check the input features."
        )

    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss).all():
            self._stop(trainer, f"non-finite training loss ({loss.item()})")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        params = list(pl_module.named_parameters())
        if torch.stack([torch.isfinite(p).all() for _, p in params]).all():  # one device sync per step
            return
        name = next(n for n, p in params if not torch.isfinite(p).all())
        self._stop(trainer, f"non-finite values in parameter {name.removeprefix('model.')}")

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        loss = trainer.callback_metrics.get("val_loss")
        if loss is not None and not torch.isfinite(torch.as_tensor(loss)).all():
            self._stop(trainer, f"non-finite validation loss ({float(loss)})")


class ResumableMetrics(pl.Callback):
    """Keep ``metrics.csv`` whole across ``--resume``.

    Lightning's CSV logger deletes its ``metrics.csv`` when it starts, so a resumed run would lose every row
    logged before the kill. This callback reads those rows before the logger starts (``rows``, taken when the
    callback is built), puts back the ones of the epochs the checkpoint completed, and flushes the logger at the
    start of every epoch so that a kill loses at most the epoch in progress, which the resumed run repeats.
    """

    def __init__(self, path: str | os.PathLike | None) -> None:
        self.rows: list[dict] = []
        if path is not None and Path(path).is_file():
            with Path(path).open(newline="") as handle:
                self.rows = list(csv.DictReader(handle))

    def on_train_start(self, trainer, pl_module) -> None:
        logger = trainer.logger
        if not self.rows or logger is None or not trainer.is_global_zero:
            return
        keep = [row for row in self.rows if row.get("epoch", "") != "" and int(float(row["epoch"])) <
                trainer.current_epoch]
        experiment = logger.experiment
        experiment.metrics[:0] = [{k: v for k, v in row.items() if v != ""} for row in keep]
        experiment.save()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.logger is not None and trainer.is_global_zero:
            trainer.logger.save()


class EpochSeed(pl.Callback):
    """Seed torch/numpy/random from ``(seed, epoch)`` at the start of every epoch.

    The data order of epoch ``e`` then depends on ``e`` alone, so a run resumed from a checkpoint sees the
    same batches as an uninterrupted one.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        value = (self.seed * 1_000_003 + trainer.current_epoch) % (2**31)
        torch.manual_seed(value)
        np.random.seed(value)
        random.seed(value)
