"""A data module base for audio datasets: clip lists per split -> cached features -> datasets."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from .audio import Item
from .base import BaseDataModule
from .cache import cached_features
from .errors import CorruptAudioError, EmptyClassError
from .features import FeatureConfig, feature_config, warn_bad


class AudioDataModule(BaseDataModule):
    """Subclasses implement :meth:`_splits` returning ``{split: (items, labels)}`` and set ``class_names``."""

    def __init__(
        self,
        root=None,
        features: str | FeatureConfig | dict = "logmel32",
        alignment: str = "end",
        cache_dir=None,
        workers: int | None = None,
        **kwargs,
    ):
        super().__init__(root=root, **kwargs)
        self.features = feature_config(features, alignment=alignment)
        self.cache_dir = cache_dir
        self.workers = workers
        self.input_shape = self.features.shape
        self.num_features = self.features.num_features
        self._stat_axes = (0,)  # per-feature statistics over every frame of every training clip
        self.cache_hits: dict[str, bool] = {}

    def _default_cache_dir(self) -> Path:
        return self.root / ".cache"

    def _resolved_cache_dir(self):
        if self.cache_dir is False:
            return None
        if self.cache_dir is None:
            return self._default_cache_dir()
        return Path(self.cache_dir)

    def _splits(self) -> dict[str, tuple[list[Item], list[int]]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _build(self) -> None:
        splits = self._splits()
        counts = Counter(splits["train"][1])
        empty = [self.class_names[c] for c in range(len(self.class_names)) if counts[c] == 0]
        if empty:
            raise EmptyClassError(f"{self.name}: no training examples for class(es) {empty} under {self.root}")
        cache_dir = self._resolved_cache_dir()
        self._datasets = {}
        bad_all: list[str] = []
        for split, (items, labels) in splits.items():
            feats, bad, hit = cached_features(
                items,
                self.features,
                cache_dir,
                f"{self.name}.{split}",
                root=self.root,
                workers=self.workers,
                progress=self.progress,
            )
            self.cache_hits[split] = hit
            bad_idx = {i for i, _ in bad}
            bad_all.extend(why for _, why in bad)
            index = np.array([i for i in range(len(items)) if i not in bad_idx], dtype=np.int64)
            self._datasets[split] = (feats, np.asarray(labels, dtype=np.int64), index)
        self.bad_files = bad_all
        if bad_all and self.strict:
            raise CorruptAudioError(
                f"{self.name}: {len(bad_all)} unreadable audio file(s) (strict=True):\n  " + "\n  ".join(bad_all[:20])
            )
        warn_bad(bad_all, f"{self.name} ({self.root})")
        labels = self._datasets["train"][1][self._datasets["train"][2]]
        left = Counter(labels.tolist())
        empty = [self.class_names[c] for c in range(len(self.class_names)) if left[c] == 0]
        if empty:
            raise EmptyClassError(f"{self.name}: every training clip of class(es) {empty} is unreadable")
