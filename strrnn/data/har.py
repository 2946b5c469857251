"""UCI Human Activity Recognition (smartphone inertial signals): ``har6`` and the binary ``har2``.

Layout (the official ``UCI HAR Dataset`` folder; ``root`` may be that folder or its parent)::

    UCI HAR Dataset/activity_labels.txt
    UCI HAR Dataset/{train,test}/y_{split}.txt, subject_{split}.txt
    UCI HAR Dataset/{train,test}/Inertial Signals/{body_acc,body_gyro,total_acc}_{x,y,z}_{split}.txt

Each sample is the 9 raw channels over one 2.56-s window: shape ``(128, 9)`` (time, channel), in
the channel order of :data:`CHANNELS`; 7,352 training and 2,947 test windows. The validation split
is carved out of the training *subjects* (``val_fraction`` of them, chosen with ``seed``), so no
subject spans train and validation. Normalization: per-channel mean/std of the training split.

``har2`` is the HAR-2 task of the FastGRNN paper (Kusupati et al., "FastGRNN: A Fast, Accurate,
Stable and Tiny Kilobyte Sized Gated Recurrent Neural Network", NeurIPS 2018, appendix on data
sets), which the STR paper reuses (7,352 / 2,947 windows, 128 x 9): the six activities merged into
two classes, {sitting, laying, walking upstairs} vs {standing, walking, walking downstairs}.
(Grouping as recorded in the project's paper notes; it could not be re-checked against the paper text
from this machine, so it is one constant, :data:`HAR2_GROUPS`, easy to audit and change.)

License: UCI HAR is distributed by the UCI Machine Learning Repository under CC BY 4.0; cite
Anguita et al., ESANN 2013.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from ..fileio import atomic_path
from .base import BaseDataModule
from .errors import DatasetNotFoundError, LayoutError
from .paths import dataset_dir

ACTIVITIES = (
    "WALKING",
    "WALKING_UPSTAIRS",
    "WALKING_DOWNSTAIRS",
    "SITTING",
    "STANDING",
    "LAYING",
)  # ids 1..6
CHANNELS = tuple(f"{s}_{a}" for s in ("body_acc", "body_gyro", "total_acc") for a in "xyz")
HAR2_GROUPS = (("SITTING", "LAYING", "WALKING_UPSTAIRS"), ("STANDING", "WALKING", "WALKING_DOWNSTAIRS"))
FOLDER = "UCI HAR Dataset"


def find_har_root(root: Path) -> Path:
    if not root.exists():
        raise DatasetNotFoundError(
            f"UCI HAR not found: {root} does not exist. Download it with --download (in Python: download=True; "
            "or `strrnn data download har`), pass --data-dir / set $STRRNN_HAR to the folder holding "
            "'UCI HAR Dataset', or unzip 'UCI HAR Dataset.zip' from https://archive.ics.uci.edu/dataset/240 there."
        )
    return root / FOLDER if (root / FOLDER).is_dir() else root


def _files(base: Path, split: str) -> dict[str, Path]:
    sig = base / split / "Inertial Signals"
    files = {c: sig / f"{c}_{split}.txt" for c in CHANNELS}
    files["y"] = base / split / f"y_{split}.txt"
    files["subject"] = base / split / f"subject_{split}.txt"
    return files


def _read_table(path: Path) -> np.ndarray:
    import pandas as pd

    return pd.read_csv(path, sep=r"\s+", header=None, engine="c", dtype=np.float32).to_numpy()


def load_split(base: Path, split: str, cache_dir: Path | None):
    """``(X (N, 128, 9) float32, activity ids (N,) 1..6, subjects (N,))`` for ``train``/``test``."""
    files = _files(base, split)
    missing = [str(p.relative_to(base)) for p in files.values() if not p.is_file()]
    if missing:
        raise LayoutError(f"UCI HAR layout under {base} is incomplete; missing: {', '.join(missing)}")
    key = hashlib.sha256(
        json.dumps(
            [(str(p.relative_to(base)), p.stat().st_size, p.stat().st_mtime_ns) for p in files.values()]
        ).encode()
    ).hexdigest()[:20]
    cached = cache_dir / f"har.{split}-{key}.npz" if cache_dir is not None else None
    if cached is not None and cached.exists():
        try:
            with np.load(cached) as z:
                return z["x"], z["y"], z["subject"]
        except (OSError, ValueError, KeyError):
            pass
    x = np.stack([_read_table(files[c]) for c in CHANNELS], axis=-1)
    y = _read_table(files["y"]).astype(np.int64).ravel()
    subject = _read_table(files["subject"]).astype(np.int64).ravel()
    if not (len(x) == len(y) == len(subject)):
        raise LayoutError(f"UCI HAR {split}: signal, label and subject files disagree in length")
    if y.size and (y.min() < 1 or y.max() > 6):
        raise ValueError(f"UCI HAR {split}: activity ids must lie in 1..6")
    if cached is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(cached) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, x=x, y=y, subject=subject)
        for old in cache_dir.glob(f"har.{split}-*.npz"):
            if old != cached:
                old.unlink(missing_ok=True)
    return x, y, subject


class HARDataModule(BaseDataModule):
    """``classes=6`` (``har6``) or ``classes=2`` (``har2``, see :data:`HAR2_GROUPS`)."""

    def __init__(
        self,
        root=None,
        classes: int = 6,
        val_fraction: float = 0.15,
        cache_dir=None,
        download: bool = False,
        **kwargs,
    ):
        super().__init__(root=dataset_dir("har", root), **kwargs)
        if classes not in (2, 6):
            raise ValueError("classes must be 6 (har6) or 2 (har2)")
        self.classes, self.val_fraction, self.cache_dir = classes, val_fraction, cache_dir
        self.download = download
        self.name = f"har{classes}"
        if classes == 6:
            self.class_names = [a.lower() for a in ACTIVITIES]
        else:
            self.class_names = ["+".join(a.lower() for a in g) for g in HAR2_GROUPS]
        self.input_shape = (128, len(CHANNELS))
        self.num_features = len(CHANNELS)
        self._stat_axes = (0,)

    def _labels(self, ids: np.ndarray) -> np.ndarray:
        if self.classes == 6:
            return ids - 1
        group = {ACTIVITIES.index(a) + 1: g for g, acts in enumerate(HAR2_GROUPS) for a in acts}
        return np.array([group[int(i)] for i in ids], dtype=np.int64)

    def prepare_data(self) -> None:
        if self.download and not (self.root / FOLDER).is_dir() and not (self.root / "train").is_dir():
            from .downloader import download

            download("har", self.root)

    def _build(self) -> None:
        self.prepare_data()
        base = find_har_root(self.root)
        cache = None if self.cache_dir is False else Path(self.cache_dir) if self.cache_dir else base / ".cache"
        xtr, ytr, str_ = load_split(base, "train", cache)
        xte, yte, _ = load_split(base, "test", cache)
        subjects = np.unique(str_)
        rng = np.random.default_rng(self.seed)
        n_val = int(round(self.val_fraction * len(subjects)))
        n_val = min(max(n_val, 1 if self.val_fraction > 0 and len(subjects) > 1 else 0), len(subjects) - 1)
        val_subj = set(rng.permutation(subjects)[:n_val].tolist())
        is_val = np.isin(str_, list(val_subj))
        ytr, yte = self._labels(ytr), self._labels(yte)
        self.val_subjects = sorted(int(s) for s in val_subj)
        self._datasets = {
            "train": (xtr, ytr, np.flatnonzero(~is_val)),
            "val": (xtr, ytr, np.flatnonzero(is_val)),
            "test": (xte, yte, np.arange(len(yte))),
        }


def har6(root=None, **kw) -> HARDataModule:
    return HARDataModule(root, classes=6, **kw)


def har2(root=None, **kw) -> HARDataModule:
    return HARDataModule(root, classes=2, **kw)
