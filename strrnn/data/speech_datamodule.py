"""A data module base for audio datasets: clip lists per split -> cached features -> datasets."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .audio import Augmentation, Item, augment_waveform, load_audio, load_item
from .base import BaseDataModule, EpochShuffleSampler, one_thread_worker, stats_arrays
from .cache import cached_features
from .errors import CorruptAudioError, EmptyClassError, EmptySplitError
from .features import FeatureConfig, compute_features, feature_config, warn_bad


class AugmentedAudioDataset(Dataset):
    """Training clips augmented afresh at every access; batches are featurized by :meth:`collate`.

    The clips are held in memory as waveforms ``(n, N)``. Item ``i`` is ``(augmented waveform (N,) float32, label)``
    (:func:`augment_waveform`, with a generator drawn from torch's global RNG, which the trainer seeds per epoch, so
    a resumed run sees the same augmentations); :meth:`collate` turns a list of items into ``(features (B, T, F)
    float32 tensor normalized like the cached splits, labels (B,) int64)``.
    """

    def __init__(self, audio: np.ndarray, labels, cfg: FeatureConfig, augmentation: Augmentation,
                 noises: list[np.ndarray], mean=None, std=None, chunk: int = 16):
        self.audio, self.labels = audio, np.asarray(labels, dtype=np.int64)
        self.cfg, self.augmentation, self.noises = cfg, augmentation, list(noises)
        self.mean, self.std, self.chunk = mean, std, chunk

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def targets(self) -> np.ndarray:
        return self.labels

    def __getitem__(self, i: int):
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,))))
        return augment_waveform(self.audio[i], rng, self.cfg.sample_rate, self.augmentation, self.noises), \
            int(self.labels[i])

    def features(self, audio: np.ndarray) -> np.ndarray:
        """``audio`` (B, N) -> normalized features (B, T, F) float32 (in chunks: small FFT batches are fastest)."""
        x = np.concatenate([compute_features(audio[s : s + self.chunk], self.cfg)
                            for s in range(0, len(audio), self.chunk)]) if len(audio) else \
            np.zeros((0, *self.cfg.shape), np.float32)
        if self.mean is not None:
            x = (x - self.mean) / self.std
        return x.astype(np.float32, copy=False)

    def collate(self, batch):
        audio = np.stack([y for y, _ in batch])
        labels = torch.tensor([label for _, label in batch], dtype=torch.int64)
        return torch.from_numpy(self.features(audio)), labels


class AudioDataModule(BaseDataModule):
    """Subclasses implement :meth:`_splits` returning ``{split: (items, labels)}`` and set ``class_names``.

    Every split in :attr:`required_splits` must hold clips (:class:`EmptySplitError` otherwise, raised before any
    feature is computed); the other splits may be empty (e.g. scoring a whole folder as the test split). Setting
    :attr:`scored_splits` (e.g. ``("test",)``) before ``setup`` marks a module built only to score a trained
    model: then only those splits must hold clips, and no class needs training clips.
    """

    #: Splits that must not be empty; subclasses may narrow it (e.g. to ``("test",)`` for evaluation only).
    required_splits: tuple[str, ...] = ("train", "val", "test")

    def __init__(
        self,
        root=None,
        features: str | FeatureConfig | dict = "logmel32",
        alignment: str = "end",
        cache_dir=None,
        workers: int | None = None,
        augment: bool | Augmentation | dict = False,
        **kwargs,
    ):
        super().__init__(root=root, **kwargs)
        if augment is True:
            augment = Augmentation()
        elif isinstance(augment, dict):
            augment = Augmentation(**augment)
        self.augment = augment or None
        self.features = feature_config(features, alignment=alignment)
        self.cache_dir = cache_dir
        self.workers = workers
        self.input_shape = self.features.shape
        self.num_features = self.features.num_features
        self._stat_axes = (0,)  # per-feature statistics over every frame of every training clip
        self.cache_hits: dict[str, bool] = {}
        self.scored_splits: tuple[str, ...] | None = None

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

    def _noise_items(self) -> list[Item]:
        """Noise recordings mixed into training clips by ``augment`` (none by default; Speech Commands: its
        ``_background_noise_`` files, or the training split's ``_silence_`` clips in the test-set layout)."""
        return []

    def setup(self, stage: str | None = None) -> None:
        ready = self._ready
        super().setup(stage)
        if self.augment is not None and not ready:
            self.train_set = self._augmented_train_set()

    def train_dataloader(self):
        if not isinstance(self.train_set, AugmentedAudioDataset):
            return super().train_dataloader()
        ds = self.train_set
        return torch.utils.data.DataLoader(
            ds, batch_size=self.batch_size, sampler=EpochShuffleSampler(len(ds), self.seed), collate_fn=ds.collate,
            num_workers=self.num_workers, pin_memory=self.pin_memory, drop_last=self.drop_last,
            persistent_workers=self.num_workers > 0, worker_init_fn=one_thread_worker if self.num_workers else None,
        )

    def _augmented_train_set(self) -> AugmentedAudioDataset:
        items, labels = self._train_items
        keep = self.train_set.index  # readable clips only
        cfg = self.features
        audio = np.stack([load_item(items[j], cfg.sample_rate, cfg.num_samples, cfg.alignment) for j in keep]) \
            if len(keep) else np.zeros((0, cfg.num_samples), np.float32)
        noises = []
        for item in self._noise_items():
            try:
                noises.append(load_audio(item.path, cfg.sample_rate))
            except Exception:  # noqa: BLE001 - reported when the split's features were built
                continue
        mean = std = None
        if self.normalize:
            mean, std = stats_arrays(self.normalization, self.input_shape)
        return AugmentedAudioDataset(audio, np.asarray(labels)[keep], cfg, self.augment, noises, mean, std)

    def _empty_split_hint(self, split: str) -> str:
        """How to fix an empty ``split`` (overridden by datasets with list files)."""
        return "check the dataset layout"

    def _check_nonempty(self, splits: dict, what: str) -> None:
        for split in self.scored_splits or self.required_splits:
            if not len(splits[split]):
                raise EmptySplitError(
                    f"{self.name}: the {split} split is empty{what} under {self.root}; {self._empty_split_hint(split)}"
                )

    def _build(self) -> None:
        splits = self._splits()
        self._check_nonempty({k: items for k, (items, _) in splits.items()}, "")
        self._train_items = splits["train"]
        training = self.scored_splits is None and "train" in self.required_splits
        counts = Counter(splits["train"][1])
        empty = [self.class_names[c] for c in range(len(self.class_names)) if counts[c] == 0]
        if empty and training:
            raise EmptyClassError(f"{self.name}: no training examples for class(es) {empty} under {self.root}")
        cache_dir = self._resolved_cache_dir()
        self._datasets = {}
        bad_all: list[str] = []
        for split, (items, labels) in splits.items():
            if not items:
                self._datasets[split] = (np.zeros((0, *self.features.shape), np.float32),
                                         np.zeros(0, np.int64), np.zeros(0, np.int64))
                self.cache_hits[split] = True
                continue
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
        self._check_nonempty({k: index for k, (_, _, index) in self._datasets.items()}, " (every clip is unreadable)")
        labels = self._datasets["train"][1][self._datasets["train"][2]]
        left = Counter(labels.tolist())
        empty = [self.class_names[c] for c in range(len(self.class_names)) if left[c] == 0]
        if empty and training:
            raise EmptyClassError(f"{self.name}: every training clip of class(es) {empty} is unreadable")
