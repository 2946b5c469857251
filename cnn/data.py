"""The CNN side's datasets for ``python -m strrnn.train --dataset NAME``: ``cnn.data.get(name, root, **kw)``.

``strrnn.artifacts`` looks here for names that ``strrnn.data`` does not know (``mnist5k`` and ``digits``
live in ``strrnn.data``). Registered:

- ``imagenet``: ImageNet in ImageFolder layout (``ROOT/train/<class>/``, ``ROOT/val/<class>/``),
  224×224 crops (:class:`cnn.imagenet.ImageNetDataModule`);
- ``imagefolder``: any ImageFolder tree of the same layout (small real image sets), with
  ``image_size`` (default 64) for CPU-scale runs;
- ``fsdd_image``: the Free Spoken Digit Dataset's log-mel spectrograms (``strrnn.data``'s ``fsdd``)
  as 1-channel images ``(1, frames, mels)`` for CNNs such as ``spectrogram_cnn``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import Dataset

from cnn.imagenet import ImageNetDataModule

__all__ = ["DATASETS", "SpectrogramImages", "fsdd_image", "get", "imagefolder", "imagenet", "names"]


def _root(name: str, root: str | Path | None, layout: str = "train/ and val/ in ImageFolder layout") -> Path:
    if root is None:
        raise ValueError(f"dataset {name!r} needs --data-dir ROOT holding {layout}")
    return Path(root)


def imagenet(
    root: str | Path | None = None,
    batch_size: int = 256,
    num_workers: int = 8,
    seed: int = 0,
    image_size: int = 224,
    **options,
) -> ImageNetDataModule:
    """ImageNet data module; ``seed`` fixes the per-epoch training shuffle."""
    return ImageNetDataModule(
        _root("imagenet", root),
        batch_size=batch_size,
        num_workers=num_workers,
        seed=seed,
        image_size=image_size,
        **options,
    )


def imagefolder(
    root: str | Path | None = None,
    batch_size: int = 64,
    num_workers: int = 2,
    seed: int = 0,
    image_size: int = 64,
    **options,
) -> ImageNetDataModule:
    """Any ImageFolder tree, ``image_size``-pixel crops (64 by default, for CPU-scale runs)."""
    return ImageNetDataModule(
        _root("imagefolder", root),
        batch_size=batch_size,
        num_workers=num_workers,
        seed=seed,
        image_size=image_size,
        **options,
    )


class _WithChannel(Dataset):
    """``(features (T, F), label)`` → ``(features (1, T, F), label)``."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        features, label = self.dataset[index]
        return features.unsqueeze(0), label


class SpectrogramImages(pl.LightningDataModule):
    """Wrap a ``strrnn.data`` sequence data module so that its ``(T, F)`` feature matrices become
    1-channel images ``(1, T, F)``; batches are ``(images (B, 1, T, F), labels (B,))``. Splits,
    normalization and class names are the wrapped module's."""

    def __init__(self, sequences: pl.LightningDataModule) -> None:
        super().__init__()
        self.sequences = sequences
        self.train_set = self.val_set = self.test_set = None

    def setup(self, stage: str | None = None) -> None:
        self.sequences.setup(stage)
        self.train_set = _WithChannel(self.sequences.train_set)
        self.val_set = _WithChannel(self.sequences.val_set)
        self.test_set = _WithChannel(self.sequences.test_set)

    @property
    def class_names(self) -> list[str]:
        return list(self.sequences.class_names)

    @property
    def num_classes(self) -> int:
        return len(self.sequences.class_names)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(1, frames, features)``."""
        return (1, *self.sequences.input_shape)

    @property
    def num_features(self) -> int:
        return 1

    @property
    def normalization(self):
        return getattr(self.sequences, "normalization", None)

    def train_dataloader(self):
        return self.sequences._loader(self.train_set, shuffle=True)

    def val_dataloader(self):
        return self.sequences._loader(self.val_set, shuffle=False)

    def test_dataloader(self):
        return self.sequences._loader(self.test_set, shuffle=False)

    def state_dict(self) -> dict:
        return self.sequences.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.sequences.load_state_dict(state)


def fsdd_image(root: str | Path | None = None, **options) -> SpectrogramImages:
    """FSDD log-mel spectrograms as 1-channel images (options as for ``strrnn.data.get("fsdd", ...)``)."""
    from strrnn import data as speech_data

    return SpectrogramImages(
        speech_data.get("fsdd", _root("fsdd_image", root, "the FSDD recordings/ folder"), **options)
    )


#: name -> factory ``(root=None, **options) -> LightningDataModule``
DATASETS: dict[str, Callable] = {"imagenet": imagenet, "imagefolder": imagefolder, "fsdd_image": fsdd_image}


def names() -> list[str]:
    """The dataset names :func:`get` accepts."""
    return list(DATASETS)


def get(name: str, root: str | Path | None = None, **options):
    """Build the data module for ``name`` (call ``.setup()`` before asking for loaders).

    Options: ``batch_size``, ``num_workers``, ``seed``, ``image_size``, ``resize_size``, ``pin_memory``.
    Unknown names raise a ``ValueError`` listing the choices.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown CNN dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    return DATASETS[name](root, **options)
