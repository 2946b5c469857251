"""ImageNet (or any ImageFolder data set) as a Lightning data module, and a small fake ImageFolder for tests.

Layout (the usual ImageNet one)::

    ROOT/train/<class>/<image>.JPEG
    ROOT/val/<class>/<image>.JPEG      (same class folders as train/)

Transforms are the standard torchvision ones the STR paper used: training ``RandomResizedCrop(224)`` +
horizontal flip; validation ``Resize(256)`` + ``CenterCrop(224)``; both normalized with the ImageNet
mean/std. ``image_size`` scales both (``resize_size`` defaults to ``image_size · 256/224``) for
CPU-scale runs on small real image sets. ImageNet has no labelled test split, so ``test_dataloader``
serves ``val/``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from strrnn.data.base import epoch_loader

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImageNetDataModule",
    "check_imagefolder",
    "eval_transform",
    "make_fake_imagefolder",
    "train_transform",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_EXTENSIONS = tuple(datasets.folder.IMG_EXTENSIONS)


def train_transform(image_size: int = 224) -> transforms.Compose:
    """PIL image → float tensor ``(3, image_size, image_size)``: random-resized crop, flip, normalize."""
    return transforms.Compose(
        [
            transforms.RandomResizedCrop(image_size),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def eval_transform(image_size: int = 224, resize_size: int | None = None) -> transforms.Compose:
    """PIL image → float tensor ``(3, S, S)`` (S = image_size): resize, center crop, normalize."""
    resize_size = resize_size or round(image_size * 256 / 224)
    return transforms.Compose(
        [
            transforms.Resize(resize_size),
            transforms.CenterCrop(image_size),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def _class_folders(split_dir: Path) -> list[str]:
    return sorted(
        entry.name for entry in os.scandir(split_dir) if entry.is_dir() and not entry.name.startswith(".")
    )


def _count_images(folder: Path) -> int:
    return sum(
        1
        for _, _, files in os.walk(folder, followlinks=True)
        for f in files
        if f.lower().endswith(_EXTENSIONS)
    )


def check_imagefolder(root: str | Path, splits: Sequence[str] = ("train", "val")) -> list[str]:
    """Validate an ImageFolder tree and return its sorted class names.

    Raises ``FileNotFoundError`` when ``root`` or a split folder is missing, and ``ValueError`` when a
    split has no class folders or no images (or a training class folder is empty), or when the splits'
    class folders differ (the message lists the classes found on one side only).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"image data folder {root} does not exist; expected {root}/train/<class>/*.jpg "
            f"and {root}/val/<class>/*.jpg (ImageFolder layout)"
        )
    classes_by_split: dict[str, list[str]] = {}
    for split in splits:
        split_dir = root / split
        if not split_dir.is_dir():
            raise FileNotFoundError(
                f"{split_dir} does not exist; expected one folder per class under "
                f"{root}/{{{','.join(splits)}}}/"
            )
        classes = _class_folders(split_dir)
        if not classes:
            raise ValueError(f"{split_dir} holds no class folders; expected {split_dir}/<class>/<image>")
        counts = {name: _count_images(split_dir / name) for name in classes}
        if not any(counts.values()):
            raise ValueError(
                f"no images found under {split_dir} ({len(classes)} class folders; "
                f"looked for files ending in {', '.join(_EXTENSIONS)})"
            )
        empty = [name for name, count in counts.items() if count == 0]
        if split == splits[0] and empty:
            raise ValueError(
                f"{len(empty)} class folder(s) of {split_dir} hold no images: "
                f"{', '.join(empty[:10])}{' …' if len(empty) > 10 else ''}"
            )
        classes_by_split[split] = classes
    reference_split, reference = splits[0], classes_by_split[splits[0]]
    for split, classes in classes_by_split.items():
        if classes != reference:
            only_ref = sorted(set(reference) - set(classes))
            only_this = sorted(set(classes) - set(reference))
            raise ValueError(
                f"class folders differ between {root / reference_split} ({len(reference)} classes) and "
                f"{root / split} ({len(classes)} classes): only in {reference_split}/: {only_ref[:10]}; "
                f"only in {split}/: {only_this[:10]}"
            )
    return reference


class ImageNetDataModule(pl.LightningDataModule):
    """ImageFolder data module over ``data_dir/{train,val}``; batches ``(images (B, 3, S, S), labels (B,))``.

    Args:
        data_dir: the folder holding ``train/`` and ``val/``.
        batch_size: per-process batch size (the paper: 256 in total).
        num_workers: DataLoader worker processes.
        image_size: crop size ``S`` (224 for ImageNet).
        resize_size: validation short-side resize (default ``round(S · 256/224)``).
        pin_memory: pin host memory (default: when CUDA is available).
        seed: the training shuffle depends on ``(seed, epoch)`` only, so resumed runs see the same batches.

    ``setup()`` validates the tree (:func:`check_imagefolder`) and sets ``classes``/``num_classes``.
    """

    def __init__(
        self,
        data_dir: str | Path,
        batch_size: int = 256,
        num_workers: int = 8,
        image_size: int = 224,
        resize_size: int | None = None,
        pin_memory: bool | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.data_dir = Path(data_dir)
        self.seed = seed
        self.batch_size, self.num_workers = batch_size, num_workers
        self.image_size, self.resize_size = image_size, resize_size
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.classes: list[str] | None = None
        self.train_set = self.val_set = None

    @property
    def num_classes(self) -> int:
        """Number of class folders (validates the tree on first use)."""
        if self.classes is None:
            self.classes = check_imagefolder(self.data_dir)
        return len(self.classes)

    @property
    def class_names(self) -> list[str]:
        """Class folder names in label order (validates the tree on first use)."""
        if self.classes is None:
            self.classes = check_imagefolder(self.data_dir)
        return list(self.classes)

    @property
    def num_features(self) -> int:
        """Input channels (3): the data-module protocol of ``strrnn.data`` asks for it."""
        return 3

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """One sample's shape ``(3, S, S)``."""
        return (3, self.image_size, self.image_size)

    def setup(self, stage: str | None = None) -> None:
        self.classes = check_imagefolder(self.data_dir)
        if self.train_set is None:
            self.train_set = datasets.ImageFolder(
                str(self.data_dir / "train"), train_transform(self.image_size)
            )
            self.val_set = datasets.ImageFolder(
                str(self.data_dir / "val"),
                eval_transform(self.image_size, self.resize_size),
                allow_empty=True,
            )

    def _loader(self, dataset, shuffle: bool) -> DataLoader:
        return epoch_loader(dataset, self.batch_size, shuffle, self.seed, self.num_workers, self.pin_memory,
                            drop_last=True)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)


def make_fake_imagefolder(
    root: str | Path,
    classes: int | Sequence[str] = 3,
    per_class: int = 4,
    size: int = 32,
    splits: Sequence[str] = ("train", "val"),
    seed: int = 0,
) -> Path:
    """Write a small random-image ImageFolder tree: ``root/<split>/<class>/<i>.png``, RGB ``size × size``.

    Each class has its own mean colour plus noise, so a small model can learn it. ``classes`` is a
    count (names ``class_000``, …) or a list of names. Returns ``root``.
    """
    from PIL import Image

    root = Path(root)
    names = [f"class_{i:03d}" for i in range(classes)] if isinstance(classes, int) else list(classes)
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, size=(len(names), 3))
    for split in splits:
        for name, colour in zip(names, colours, strict=True):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(per_class):
                noise = rng.normal(0.0, 40.0, size=(size, size, 3))
                pixels = np.clip(colour + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels, mode="RGB").save(folder / f"{index:04d}.png")
    return root
