"""Callbacks on tiny in-memory problems: NaN guard, rank logging and its warning, the rank schedule, checkpoint I/O."""

from __future__ import annotations

import csv
import logging
import pickle

import pytest
import pytorch_lightning as pl
import torch
from tiny_nets import TinyNet, tiny_dataset
from torch.utils.data import DataLoader

import strrnn
from strrnn.callbacks import (
    AtomicCheckpointIO,
    NonFiniteLossError,
    NonFiniteLossGuard,
    RankLogger,
    RankRecipeCallback,
    ThresholdDecayWarmup,
)
from strrnn.fileio import CorruptCheckpointError
from strrnn.spectral_gmp import SpectralGMP
from strrnn.str_recipe import STRRecipe
from strrnn.task import ClassificationTask, OptimConfig, ranks_frozen

_Net = TinyNet


def _loaders(n=96):
    data = tiny_dataset(n)
    return DataLoader(data, batch_size=16, shuffle=True), DataLoader(data, batch_size=32)


def _trainer(tmp_path, callbacks, epochs=3):
    return pl.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_progress_bar=False,
                      enable_model_summary=False, default_root_dir=tmp_path, callbacks=callbacks,
                      plugins=[AtomicCheckpointIO()], enable_checkpointing=any(
                          isinstance(c, pl.callbacks.ModelCheckpoint) for c in callbacks))


def test_nan_loss_stops_with_epoch_and_step_and_keeps_last_good_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = _Net(nan_after=6 + 2)  # 6 steps per epoch: the second epoch's 3rd training step goes NaN
    task = ClassificationTask(model, OptimConfig(epochs=3))
    ckpt = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True)
    train, _ = _loaders()
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, step 8"):
        _trainer(tmp_path, [NonFiniteLossGuard(), ckpt]).fit(task, train)
    state = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert state["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())
    assert all(torch.isfinite(p).all() for p in model.parameters())  # the NaN step never reached the weights


def test_rank_logger_writes_rows_and_warns_when_threshold_covers_spectrum(tmp_path, caplog):
    torch.manual_seed(1)
    model = _Net()
    strrnn.lowrank_rnn(model, s_init=-10.0, min_rank=2)
    with torch.no_grad():
        p = model.cell.parametrizations.U[0]
        p.threshold.s.fill_(3.0)  # alpha = e^3 > every spectrum entry
    task = ClassificationTask(model, OptimConfig(epochs=2, weight_decay=0.0))
    train, _ = _loaders()
    path = tmp_path / "ranks.csv"
    with caplog.at_level(logging.WARNING, logger="strrnn"):
        _trainer(tmp_path, [RankLogger(path)], epochs=2).fit(task, train)
    rows = list(csv.DictReader(path.open()))
    assert [(r["epoch"], r["tensor"]) for r in rows] == [("0", "W"), ("0", "U"), ("1", "W"), ("1", "U")]
    assert int(rows[-1]["rank"]) == 2  # min_rank holds
    assert "threshold of cell.U" in caplog.text and "only its 2 protected entries (min_rank) survive" in caplog.text


def test_rank_schedule_callback_lands_on_target_ranks_and_resumes(tmp_path):
    torch.manual_seed(2)
    model = _Net()
    strrnn.lowrank_rnn(model, factors="orthogonal")
    task = ClassificationTask(model, OptimConfig(epochs=4))
    train, _ = _loaders()
    callback = RankRecipeCallback(SpectralGMP, target_ranks={"cell.W": 3, "cell.U": 5}, end=0.5)
    _trainer(tmp_path, [callback], epochs=4).fit(task, train)
    assert strrnn.rank(model.cell, "W") == 3 and strrnn.rank(model.cell, "U") == 5
    assert callback.recipe.done and callback.state_dict()["steps"] == 4 * 6
    assert ranks_frozen(model)
    fresh = RankRecipeCallback(SpectralGMP, target_ranks={"cell.W": 3, "cell.U": 5}, end=0.5)
    fresh.load_state_dict(callback.state_dict())
    assert fresh.state_dict() == callback.state_dict()  # kept until training starts


def test_str_recipe_callback_restarts_the_lr_where_debias_releases(tmp_path):
    # the restart comes at the release that ends the debias fade, steps after the freeze: the task must see it
    torch.manual_seed(2)
    model = _Net()
    strrnn.lowrank_rnn(model, factors="orthogonal", relative=True)
    task = ClassificationTask(model, OptimConfig(epochs=4, threshold_decay=1.0))
    lrs = []

    class Spy(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, *args):
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    train, _ = _loaders()
    callback = RankRecipeCallback(STRRecipe, freeze_at=0.25, debias=0.25, rewarm=True)
    _trainer(tmp_path, [callback, Spy()], epochs=4).fit(task, train)
    recipe = callback.recipe
    assert recipe.ranks_final_at == 6 and recipe.released_at == 12
    assert task.lr_restart == recipe.restart_step == 12
    # the lr falls until the release, then jumps back up: a new cosine cycle
    assert lrs[12] > 1.5 * lrs[11] and all(b <= a for a, b in zip(lrs[12:], lrs[13:]))


def test_rank_schedule_callback_rejects_bad_targets(tmp_path):
    model = _Net()
    strrnn.lowrank_rnn(model, factors="orthogonal")
    task = ClassificationTask(model, OptimConfig(epochs=1))
    train, _ = _loaders()
    with pytest.raises(ValueError, match=r"unknown tensors \['cell.V'\]"):
        _trainer(tmp_path, [RankRecipeCallback(SpectralGMP, target_ranks={"cell.V": 3})], epochs=1).fit(task, train)


def test_decay_warmup_ramps_the_threshold_group_decay(tmp_path):
    model = _Net()
    strrnn.sparsify(model)
    task = ClassificationTask(model, OptimConfig(epochs=2, threshold_decay=1e-2, scheduler="constant"))
    seen = []

    class Spy(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, *args):
            group = next(g for g in trainer.optimizers[0].param_groups if g["name"] == "threshold")
            seen.append(group["weight_decay"])

    train, _ = _loaders()
    _trainer(tmp_path, [ThresholdDecayWarmup(1.0), Spy()], epochs=2).fit(task, train)
    assert seen[0] == 0.0
    assert all(b >= a for a, b in zip(seen, seen[1:]))
    assert seen[-1] == pytest.approx(1e-2)


class _Evil:
    def __reduce__(self):
        return (print, ("arbitrary code ran",))


def test_checkpoints_load_with_weights_only_and_refuse_pickled_code(tmp_path):
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(2)}, "epoch": 3}, tmp_path / "ok.ckpt")
    assert io.load_checkpoint(tmp_path / "ok.ckpt")["epoch"] == 3
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind
    with open(tmp_path / "evil.ckpt", "wb") as handle:
        pickle.dump({"state_dict": {}, "payload": _Evil()}, handle)
    with pytest.raises(CorruptCheckpointError, match="evil.ckpt: it holds objects other than tensors") as info:
        io.load_checkpoint(tmp_path / "evil.ckpt")
    assert "weights_only=False" not in str(info.value)  # never suggest the unsafe load
