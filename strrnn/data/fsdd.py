"""Free Spoken Digit Dataset (FSDD): real recordings of the digits 0-9, 8 kHz mono WAV.

Layout: ``<root>/recordings/{digit}_{speaker}_{take}.wav``. Official split: takes 0-4 are the test
set (300 clips), takes 5-49 training (2,700 clips); the validation set is carved out of the training
takes (``val_takes``, default 5-9 -> 300 clips, leaving 2,400 for training). ``holdout_speaker=name``
instead tests on every clip of that speaker and trains/validates on the other speakers (validation:
``val_takes`` of the remaining speakers). Clips are resampled to 16 kHz and end-aligned to 1 s.

License: CC BY-SA 4.0 (Jakobovski/free-spoken-digit-dataset). The default root is ``$STRRNN_FSDD``, else
``$STRRNN_DATA/fsdd``, else ``~/.local/share/strrnn/fsdd`` (:mod:`strrnn.data.paths`); ``download=True``
fetches the recordings there (:func:`download_fsdd`). The dataset is treated as read-only, so features are
cached under ``$STRRNN_CACHE`` / ``~/.cache/strrnn/fsdd`` unless ``cache_dir`` is given.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from .audio import Item
from .base import user_cache_dir
from .downloader import FSDD_CLIP as _NAME
from .downloader import download_fsdd
from .errors import DatasetNotFoundError, LayoutError
from .paths import dataset_dir
from .speech_datamodule import AudioDataModule

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def default_fsdd_root() -> Path:
    """FSDD's folder when none is given: ``$STRRNN_FSDD``, ``$STRRNN_DATA/fsdd`` or the user data folder's."""
    return dataset_dir("fsdd")


class FSDDDataModule(AudioDataModule):
    name = "fsdd"

    def __init__(
        self,
        root=None,
        val_takes=range(5, 10),
        test_takes=range(0, 5),
        holdout_speaker: str | None = None,
        download: bool = False,
        **kwargs,
    ):
        super().__init__(root=dataset_dir("fsdd", root), **kwargs)
        self.download = download
        self.val_takes = {int(t) for t in val_takes}
        self.test_takes = {int(t) for t in test_takes}
        if self.val_takes & self.test_takes:
            raise ValueError(f"val_takes and test_takes overlap: {sorted(self.val_takes & self.test_takes)}")
        self.holdout_speaker = holdout_speaker
        self.class_names = list(DIGITS)

    def _default_cache_dir(self) -> Path:
        return user_cache_dir() / "fsdd"

    def prepare_data(self) -> None:
        """Download the recordings (:func:`download_fsdd`) when asked to and ``root/recordings`` is missing."""
        if self.download and not (self.root / "recordings").exists():
            download_fsdd(self.root, progress=self.progress)

    def _splits(self):
        self.prepare_data()
        rec = self.root / "recordings"
        if not self.root.is_dir():
            raise DatasetNotFoundError(
                f"FSDD not found: {self.root} does not exist. Download it with --download (in Python: "
                "download=True; or `strrnn data download fsdd`), pass --data-dir <folder holding "
                "recordings/> (in Python: root=...) or set $STRRNN_FSDD; the data is at "
                "https://github.com/Jakobovski/free-spoken-digit-dataset (its recordings/ folder)."
            )
        if not rec.is_dir():
            raise LayoutError(f"FSDD layout under {self.root} is incomplete; missing: recordings/")
        entries, ignored = [], []
        for p in sorted(rec.glob("*.wav")):
            m = _NAME.match(p.name)
            if m:
                entries.append((str(p), int(m.group(1)), m.group(2), int(m.group(3))))
            else:
                ignored.append(p.name)
        if ignored:
            warnings.warn(f"FSDD: {len(ignored)} file(s) in {rec} do not fit {{digit}}_{{speaker}}_{{take}}.wav and "
                          f"were ignored: {', '.join(ignored[:5])}{' …' if len(ignored) > 5 else ''}", stacklevel=2)
        if not entries:
            raise LayoutError(f"no {{digit}}_{{speaker}}_{{take}}.wav files in {rec}")
        speakers = sorted({e[2] for e in entries})
        if self.holdout_speaker is not None and self.holdout_speaker not in speakers:
            raise ValueError(f"holdout_speaker {self.holdout_speaker!r} not among the speakers {speakers}")
        out = {s: ([], []) for s in ("train", "val", "test")}
        for path, digit, speaker, take in entries:
            if self.holdout_speaker is not None:
                split = "test" if speaker == self.holdout_speaker else "val" if take in self.val_takes else "train"
            else:
                split = "test" if take in self.test_takes else "val" if take in self.val_takes else "train"
            out[split][0].append(Item(path))
            out[split][1].append(digit)
        return out


def fsdd(root=None, **kw) -> FSDDDataModule:
    """The FSDD data module (``strrnn.data.get("fsdd", root, **kw)``)."""
    return FSDDDataModule(root, **kw)
