"""Lightning callbacks for the cross-cutting concerns of STR training.

* :class:`RankLogger` — per-epoch rank / sparsity / threshold of every STR tensor into ``ranks.csv``, and a
  warning when a threshold would remove every singular value (``min_rank`` holds).
* :class:`RankRecipeCallback` — a low-rank recipe object (also for plain loops): :class:`strrnn.STRRecipe`
  (learned thresholds; decay warm-up, budget control, freeze and release) or :class:`strrnn.SpectralGMP` (the
  driven baseline).
* :class:`ThresholdDecayWarmup` — ramp the thresholds' decay up over the first epochs (unstructured STR: softens
  the cliff where a strong decay cuts many weights at once).
* :class:`NonFiniteLossGuard` — stop on a NaN/inf loss, naming epoch and step, before the optimizer step, so the
  last good checkpoint is kept.
* :class:`EpochSeed` — reseed every epoch from ``(seed, epoch)`` so a resumed run sees the same batches.
* :class:`AtomicCheckpointIO` — checkpoints written through a temporary file and ``os.replace``; loaded with
  ``weights_only=True``.

These are ``pytorch_lightning`` classes (a callback is a ``pytorch_lightning.Callback``); each is written without
a Lightning base and given one by :func:`strrnn.lightning_compat.lightning_class`, so that
:mod:`strrnn.lightning_compat` can offer the same classes to a ``lightning.pytorch`` Trainer.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import random
from pathlib import Path

import numpy as np
import torch

from .fileio import atomic_path, atomic_write_text, load_checkpoint_file
from .lightning_compat import lightning_class
from .low_rank import LowRankSTR, originals
from .reporting import iter_str_tensors, report
from .spectral_gmp import SpectralGMP
from .str_recipe import STRRecipe
from .threshold import threshold_group

log = logging.getLogger("strrnn")

__all__ = [
    "RankLogger",
    "RankRecipeCallback",
    "ThresholdDecayWarmup",
    "NonFiniteLossGuard",
    "NonFiniteLossError",
    "ResumableMetrics",
    "EpochSeed",
    "AtomicCheckpointIO",
]


@lightning_class("TorchCheckpointIO")
class AtomicCheckpointIO:
    """Checkpoint I/O that never leaves a half-written file and never unpickles arbitrary objects."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)

    def load_checkpoint(self, path, map_location=None, weights_only=None):
        checkpoint = load_checkpoint_file(path, map_location)
        _relocate(checkpoint, Path(path).parent)
        return checkpoint


def _relocate(checkpoint, folder: Path) -> None:
    """Point the ``ModelCheckpoint`` states of ``checkpoint`` at ``folder``, where it is loaded from.

    Lightning restores a ``ModelCheckpoint``'s best score only when its stored ``dirpath`` equals the current one:
    a run folder that was moved or copied would resume without it, let a worse epoch replace ``best.ckpt`` and
    write ``best_val_acc: null``. The run's checkpoints moved with the folder, so their paths move with it.
    """
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("callbacks"), dict):
        return
    here = os.path.realpath(folder)
    for key, state in checkpoint["callbacks"].items():
        if not (str(key).startswith("ModelCheckpoint") and isinstance(state, dict) and state.get("dirpath")):
            continue
        old = state["dirpath"]
        if old == here:
            continue
        state["dirpath"] = here
        for name in ("best_model_path", "kth_best_model_path", "last_model_path"):
            if state.get(name) and os.path.dirname(state[name]) == old:
                state[name] = os.path.join(here, os.path.basename(state[name]))
        if isinstance(state.get("best_k_models"), dict):
            state["best_k_models"] = {
                (os.path.join(here, os.path.basename(p)) if os.path.dirname(p) == old else p): v
                for p, v in state["best_k_models"].items()}


@lightning_class("Callback")
class RankLogger:
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
            if not isinstance(p, LowRankSTR) or p.threshold is None or p.min_rank == p.rank_cap:
                continue  # a frozen rank is final, whatever its threshold does now
            key = f"{path}.{name}"
            with torch.no_grad():
                m = originals(module, name)[1]
                raw, top = float(p.raw_alpha(m)), float(m.abs().max())
            if raw >= top and key not in self._warned:
                self._warned.add(key)
                kept = (f"only its {p.min_rank} protected entr{'y' if p.min_rank == 1 else 'ies'} (min_rank) "
                        "survive" if p.min_rank else "the matrix is cut to rank 0 (min_rank=0)")
                log.warning(
                    "threshold of %s (%.3g) exceeds every spectrum entry (largest %.3g): %s; lower the threshold "
                    "decay (--threshold-decay) or give the ranks a budget (--target-rank/--target-params)",
                    key.removeprefix("model."), raw, top, kept,
                )


def _fmt(value) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:g}"


@lightning_class("Callback")
class ThresholdDecayWarmup:
    """Scale the ``"threshold"`` group's weight decay (the thresholds ``s``; unstructured STR has no spectra)
    linearly from 0 to its set value over the first ``epochs`` epochs.

    Stateless (derived from the global step), so it resumes exactly.
    """

    def __init__(self, epochs: float) -> None:
        if epochs < 0:
            raise ValueError(f"warm-up epochs must be >= 0, got {epochs}")
        self.epochs = epochs
        self._base: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        group = threshold_group(trainer.optimizers[0]) if trainer.optimizers else None
        if group is None or self.epochs == 0 or group.get("frozen"):
            return
        if self._base is None:
            self._base = group.setdefault("base_weight_decay", group["weight_decay"])
        steps_per_epoch = max(1, trainer.num_training_batches)
        progress = trainer.global_step / (self.epochs * steps_per_epoch)
        group["weight_decay"] = group["base_weight_decay"] * min(1.0, progress)


@lightning_class("Callback")
class RankRecipeCallback:
    """Runs a low-rank recipe — :class:`strrnn.STRRecipe` (learned thresholds) or :class:`strrnn.SpectralGMP` (the
    driven baseline) — in a Lightning fit: built at the start of training over the task's model and optimizer,
    stepped after every optimizer step, checkpointed with the run.

    ``recipe``: the class; ``options``: its keyword arguments (``target_ranks`` with paths relative to the task's
    model). With ``rewarm`` the task's learning-rate schedule (:class:`strrnn.task.ClassificationTask`) restarts
    where the ranks freeze.
    """

    def __init__(self, recipe: type[STRRecipe] | type[SpectralGMP], **options) -> None:
        self.recipe_class, self.options = recipe, options
        self.recipe: STRRecipe | SpectralGMP | None = None
        self._pending: dict | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        model = getattr(pl_module, "model", pl_module)
        self.recipe = self.recipe_class(model, trainer.optimizers[0] if trainer.optimizers else None,
                                        total_steps=max(1, int(trainer.estimated_stepping_batches)), **self.options)
        if self._pending is not None:
            self.recipe.load_state_dict(self._pending)
            self._pending = None
        self._share_restart(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.recipe is None:
            return
        was_done = self.recipe.done
        self.recipe.step()
        if self.recipe.done and not was_done:
            log.info("ranks frozen at step %d: %s", self.recipe.steps, self.recipe.ranks())
        self._share_restart(pl_module)

    def _share_restart(self, pl_module) -> None:
        # the task's learning-rate schedule restarts where the recipe says (rewarm=True): at the freeze, or with
        # STRRecipe's debias at the release that ends the fade — checked every step, since that comes later
        if hasattr(pl_module, "lr_restart"):
            pl_module.lr_restart = self.recipe.restart_step

    def state_dict(self) -> dict:
        return self.recipe.state_dict() if self.recipe is not None else dict(self._pending or {})

    def load_state_dict(self, state_dict: dict) -> None:
        if self.recipe is not None:
            self.recipe.load_state_dict(state_dict)
        elif state_dict:
            self._pending = dict(state_dict)


class NonFiniteLossError(RuntimeError):
    """Raised when the training loss, the validation loss or a parameter is NaN or infinite; the message names
    epoch and step."""


@lightning_class("Callback")
class NonFiniteLossGuard:
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


@lightning_class("Callback")
class ResumableMetrics:
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
        self._restore(trainer)

    def on_fit_end(self, trainer, pl_module) -> None:
        # a run killed after its last epoch resumes with nothing left to fit: Lightning then skips on_train_start,
        # and the test that follows would restart the log with its own row alone
        self._restore(trainer)

    def _restore(self, trainer) -> None:
        logger = trainer.logger
        if not self.rows or logger is None or not trainer.is_global_zero:
            return
        keep = [row for row in self.rows if row.get("epoch", "") != "" and int(float(row["epoch"])) <
                trainer.current_epoch]
        self.rows = []  # once
        experiment = logger.experiment
        experiment.metrics[:0] = [{k: v for k, v in row.items() if v != ""} for row in keep]
        experiment.save()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.logger is not None and trainer.is_global_zero:
            trainer.logger.save()


@lightning_class("Callback")
class EpochSeed:
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
