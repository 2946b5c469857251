"""Shared pieces of the data modules: an array-backed dataset, normalization, a Lightning base class."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from .paths import data_root


class ArrayDataset(Dataset):
    """``(features float32 tensor, label int)`` samples from an array (possibly memory-mapped).

    ``index`` selects rows of ``features`` (e.g. to skip unreadable clips without copying the array);
    ``mean``/``std`` (broadcastable to one sample) are applied on the fly.
    """

    def __init__(self, features, labels, index=None, mean=None, std=None):
        self.features = features
        self.labels = np.asarray(labels, dtype=np.int64)
        self.index = np.arange(len(self.labels)) if index is None else np.asarray(index, dtype=np.int64)
        self.mean = None if mean is None else np.asarray(mean, dtype=np.float32)
        self.std = None if std is None else np.asarray(std, dtype=np.float32)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int):
        j = self.index[i]
        x = np.array(self.features[j], dtype=np.float32)
        if self.mean is not None:
            x = (x - self.mean) / self.std
        return torch.from_numpy(x), int(self.labels[j])

    @property
    def targets(self) -> np.ndarray:
        return self.labels[self.index]


def feature_stats(features, index, axes: tuple[int, ...], chunk: int = 1024) -> dict:
    """Mean/std over the selected rows, reducing ``axes`` of one sample (float64 accumulation)."""
    total = None
    total_sq = None
    count = 0
    index = np.asarray(index)
    for s in range(0, len(index), chunk):
        x = np.asarray(features[index[s : s + chunk]], dtype=np.float64)
        red = (0, *(a + 1 for a in axes))
        t, tq = x.sum(axis=red, keepdims=True)[0], (x * x).sum(axis=red, keepdims=True)[0]
        total = t if total is None else total + t
        total_sq = tq if total_sq is None else total_sq + tq
        count += x.size // t.size
    if not count:
        raise ValueError("cannot compute normalization statistics from an empty training split")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean * mean, 0.0))
    std = np.where(std < 1e-8, 1.0, std)
    lead = 0  # drop leading reduced axes: (1, F) -> (F,) for sequences; images keep (C, 1, 1)
    while lead < mean.ndim - 1 and lead in axes:
        lead += 1
    mean, std = mean.reshape(mean.shape[lead:]), std.reshape(std.shape[lead:])
    return {"mean": mean.astype(np.float32).tolist(), "std": std.astype(np.float32).tolist()}


def stats_arrays(norm: dict, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Turn a stored ``{"mean": [...], "std": [...]}`` into arrays broadcastable to ``shape``."""
    mean = np.asarray(norm["mean"], dtype=np.float32)
    std = np.asarray(norm["std"], dtype=np.float32)
    try:
        np.broadcast_shapes(mean.shape, shape)
        np.broadcast_shapes(std.shape, shape)
    except ValueError as exc:
        raise ValueError(f"normalization of shape {mean.shape} does not fit samples of shape {shape}") from exc
    return mean, std


def default_data_dir() -> Path:
    """Where datasets live by default: ``$STRRNN_DATA`` or the user data folder (:mod:`strrnn.data.paths`)."""
    return data_root()


def user_cache_dir() -> Path:
    """``$STRRNN_CACHE`` or ``$XDG_CACHE_HOME/strrnn`` (``~/.cache/strrnn``)."""
    env = os.environ.get("STRRNN_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "strrnn"


class EpochShuffleSampler(torch.utils.data.Sampler):
    """A shuffle whose order depends only on ``(seed, epoch)``.

    Lightning calls :meth:`set_epoch` before every epoch, so a run resumed from a checkpoint sees exactly the
    batches an uninterrupted run would (a generator advanced epoch by epoch would restart from its seed).
    """

    def __init__(self, size: int, seed: int = 0) -> None:
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size


def one_thread_worker(worker_id: int) -> None:
    """``worker_init_fn`` of the data modules' loaders: a worker computes with one thread, so that workers and the
    trainer's own threads never oversubscribe the cores (each worker would otherwise start torch's default)."""
    torch.set_num_threads(1)


def epoch_loader(dataset, batch_size: int, shuffle: bool, seed: int = 0, num_workers: int = 0,
                 pin_memory: bool = False, drop_last: bool = False) -> DataLoader:
    """The data modules' loader: shuffled by :class:`EpochShuffleSampler` (order fixed by ``(seed, epoch)``) when
    ``shuffle``; ``drop_last`` applies to shuffled (training) loaders only. Batches are the dataset's items stacked.
    """
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=EpochShuffleSampler(len(dataset), seed) if shuffle else None,
        num_workers=num_workers,
        pin_memory=pin_memory,
        drop_last=drop_last and shuffle,
        persistent_workers=num_workers > 0,
        worker_init_fn=one_thread_worker if num_workers > 0 else None,
    )


class BaseDataModule(pl.LightningDataModule):
    """Common options and loaders. Subclasses implement :meth:`_build` which must set
    ``self.class_names``, ``self.input_shape``, ``self.num_features``, ``self._datasets`` (split ->
    (features, labels, index)) and ``self._stat_axes`` (sample axes reduced by the statistics)."""

    name = "base"

    def __init__(
        self,
        root=None,
        batch_size: int = 100,
        num_workers: int = 0,
        seed: int = 0,
        normalization: dict | None = None,
        normalize: bool = True,
        strict: bool = False,
        progress: bool = True,
        pin_memory: bool = False,
        drop_last: bool = False,
    ):
        super().__init__()
        self.root = None if root is None else Path(root)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.normalize = normalize
        self.normalization = (
            None
            if normalization is None
            else {
                "mean": np.asarray(normalization["mean"], dtype=np.float32).tolist(),
                "std": np.asarray(normalization["std"], dtype=np.float32).tolist(),
            }
        )
        self.strict = strict
        self.progress = progress
        self.pin_memory = pin_memory
        self.drop_last = drop_last
        self.class_names: list[str] = []
        self.input_shape: tuple[int, ...] = ()
        self.num_features = 0
        self.bad_files: list[str] = []
        self.train_set = self.val_set = self.test_set = None
        self._ready = False

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def _build(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self._ready:
            return
        self._build()
        feats, _, tr_index = self._datasets["train"]
        if self.normalize and self.normalization is None:
            self.normalization = feature_stats(feats, tr_index, self._stat_axes)
        mean = std = None
        if self.normalize:
            mean, std = stats_arrays(self.normalization, self.input_shape)
        sets = {k: ArrayDataset(f, y, idx, mean, std) for k, (f, y, idx) in self._datasets.items()}
        self.train_set, self.val_set, self.test_set = sets["train"], sets["val"], sets["test"]
        self._ready = True

    def _loader(self, ds, shuffle: bool) -> DataLoader:
        if ds is None:
            raise RuntimeError(f"{type(self).__name__}: call .setup() before asking for a dataloader")
        return epoch_loader(ds, self.batch_size, shuffle, self.seed, self.num_workers, self.pin_memory,
                            self.drop_last)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)

    def split_sizes(self) -> dict[str, int]:
        return {"train": len(self.train_set), "val": len(self.val_set), "test": len(self.test_set)}

    def state_dict(self) -> dict:
        """Stored with Lightning checkpoints: what inference needs to rebuild identical inputs."""
        return {"normalization": self.normalization, "class_names": list(self.class_names)}

    def load_state_dict(self, state: dict) -> None:
        if state.get("normalization") is not None:
            self.normalization = state["normalization"]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, classes={self.num_classes}, "
            f"input_shape={self.input_shape})"
        )
