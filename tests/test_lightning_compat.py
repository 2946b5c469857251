"""strrnn's Lightning classes under the unified ``lightning`` package (``lightning.pytorch``) as well.

Runs only where both ``pytorch_lightning`` and ``lightning`` are installed (the ``[dev]`` extra installs both).
"""

from __future__ import annotations

import csv
import pickle
import sys

import pytest
import pytorch_lightning
import torch
from tiny_nets import TinyNet, tiny_dataset
from torch import nn
from torch.utils.data import DataLoader

import strrnn
from strrnn import callbacks, lightning_compat, task
from strrnn.optional import MissingExtraError
from strrnn.spectral_gmp import SpectralGMP

L = pytest.importorskip("lightning.pytorch", reason="the unified lightning package is not installed")


_Net = TinyNet


def _loader(n=96, shuffle=True):
    return DataLoader(tiny_dataset(n), batch_size=16, shuffle=shuffle)


def _trainer(tmp_path, callbacks_, epochs, **kw):
    return L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_progress_bar=False,
                     enable_model_summary=False, default_root_dir=tmp_path, callbacks=callbacks_,
                     plugins=[lightning_compat.AtomicCheckpointIO()], **kw)


def test_the_pytorch_lightning_classes_are_refused_by_a_lightning_trainer(tmp_path):
    """Why the module exists: the two packages' base classes are distinct."""
    assert not issubclass(task.ClassificationTask, L.LightningModule)
    with pytest.raises(TypeError, match="LightningModule"):
        L.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, default_root_dir=tmp_path).fit(
            task.ClassificationTask(_Net(), task.OptimConfig(epochs=1)), _loader())


def test_twins_share_the_code_and_differ_only_in_the_base():
    twin = lightning_compat.RankRecipeCallback
    assert issubclass(twin, L.Callback) and not issubclass(twin, pytorch_lightning.Callback)
    assert issubclass(callbacks.RankRecipeCallback, pytorch_lightning.Callback)
    assert twin.on_train_batch_end is callbacks.RankRecipeCallback.on_train_batch_end
    assert twin.__doc__ == callbacks.RankRecipeCallback.__doc__
    assert lightning_compat.on_lightning(callbacks.RankRecipeCallback) is twin  # cached
    assert issubclass(lightning_compat.ClassificationTask, L.LightningModule)
    assert set(lightning_compat.CLASSES) <= set(lightning_compat.__all__)
    with pytest.raises(TypeError, match="not one of strrnn's Lightning classes"):
        lightning_compat.on_lightning(nn.Linear)


def test_fit_resume_and_test_with_a_lightning_trainer(tmp_path):
    torch.manual_seed(2)
    model = _Net()
    strrnn.lowrank_rnn(model, factors="orthogonal")
    module = lightning_compat.ClassificationTask(model, task.OptimConfig(epochs=4))
    schedule = lightning_compat.RankRecipeCallback(SpectralGMP, target_ranks={"cell.W": 3, "cell.U": 5}, end=0.5)
    checkpoint = L.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    cbs = [schedule, lightning_compat.RankLogger(tmp_path / "ranks.csv"), lightning_compat.NonFiniteLossGuard(),
           lightning_compat.EpochSeed(0), checkpoint]
    _trainer(tmp_path, cbs, epochs=2).fit(module, _loader())
    assert (tmp_path / "ckpt" / "last.ckpt").is_file()
    assert [r["epoch"] for r in csv.DictReader((tmp_path / "ranks.csv").open())] == ["0", "0", "1", "1"]

    # resume to epoch 4 from the checkpoint: the schedule's state comes back and it lands on the targets
    torch.manual_seed(3)
    fresh = _Net()
    strrnn.lowrank_rnn(fresh, factors="orthogonal")
    resumed = lightning_compat.ClassificationTask(fresh, task.OptimConfig(epochs=4))
    again = lightning_compat.RankRecipeCallback(SpectralGMP, target_ranks={"cell.W": 3, "cell.U": 5}, end=0.5)
    trainer = _trainer(tmp_path, [again, lightning_compat.RankLogger(tmp_path / "ranks.csv")], epochs=4)
    trainer.fit(resumed, _loader(), ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert again.recipe.done and again.state_dict()["steps"] == 4 * 6
    assert strrnn.rank(fresh.cell, "W") == 3 and strrnn.rank(fresh.cell, "U") == 5
    assert [r["epoch"] for r in csv.DictReader((tmp_path / "ranks.csv").open())] == ["0", "0", "1", "1", "2", "2",
                                                                                     "3", "3"]
    result = trainer.test(resumed, _loader(shuffle=False), verbose=False)
    assert 0.0 <= result[0]["test_acc"] <= 1.0


def test_a_strrnn_data_module_feeds_a_lightning_trainer(tmp_path):
    import strrnn.data as sdata

    dm = lightning_compat.wrap_datamodule(sdata.get("digits", batch_size=64, progress=False))
    assert isinstance(dm, L.LightningDataModule)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    module = lightning_compat.ClassificationTask(model, task.OptimConfig(epochs=1, lr=1e-2))
    trainer = _trainer(tmp_path, [], epochs=1, enable_checkpointing=False, limit_train_batches=5)
    trainer.fit(module, datamodule=dm)
    assert dm.num_classes == 10  # read through to the strrnn data module
    assert trainer.test(module, datamodule=dm, verbose=False)[0]["test_acc"] > 0.3


def test_twin_instances_pickle_to_the_twin_class():
    """ddp_spawn pickles callbacks and modules: the twin must be found again by its name."""
    guard = lightning_compat.NonFiniteLossGuard()
    assert type(pickle.loads(pickle.dumps(guard))) is lightning_compat.NonFiniteLossGuard
    plain = callbacks.NonFiniteLossGuard()
    assert type(pickle.loads(pickle.dumps(plain))) is callbacks.NonFiniteLossGuard


def test_without_the_lightning_package_the_message_names_the_extra(monkeypatch):
    monkeypatch.setattr(lightning_compat, "_cache", {})
    monkeypatch.setitem(sys.modules, "lightning.pytorch", None)  # import lightning.pytorch now fails
    with pytest.raises(MissingExtraError, match=r"\[lightning\] extra: pip install 'strrnn\[lightning\]'"):
        lightning_compat.on_lightning(callbacks.EpochSeed)
