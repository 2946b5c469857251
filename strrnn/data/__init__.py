"""Speech, sensor and small image data for strrnn: Lightning data modules behind one registry.

    dm = strrnn.data.get("google12", root="data/speech_commands_v0.01")   # root=None: dataset_dir("google12")
    dm.setup(); x, y = next(iter(dm.train_dataloader()))   # x: (100, 99, 32) float32

Datasets: Speech Commands (``google12``, ``google13``, ``google30``, ``google35``, ``speech_commands``),
``fsdd``, UCI HAR (``har2``, ``har6``), ``mnist5k`` and ``digits``; synthetic speech in the Speech
Commands layout (:func:`synthesize`); downloads with :func:`download` / :func:`safe_extract`. Default folders
(``--data-dir`` > ``$STRRNN_<DATASET>`` > ``$STRRNN_DATA/<folder>`` > the user data folder): :func:`dataset_dir`;
``strrnn data where`` prints them.

The names below are loaded on first use (PEP 562): ``strrnn.data.errors`` or ``.paths`` alone import neither torch
nor librosa, which the command lines' ``--help`` relies on.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

# public name -> the module of this package that defines it
_NAMES = {
    "Item": ".audio",
    "fix_length": ".audio",
    "load_audio": ".audio",
    "ArrayDataset": ".base",
    "BaseDataModule": ".base",
    "cached_features": ".cache",
    "ARCHIVES": ".downloader",
    "cannot_download": ".downloader",
    "download": ".downloader",
    "download_fsdd": ".downloader",
    "fetch": ".downloader",
    "safe_extract": ".downloader",
    "ChecksumError": ".errors",
    "CorruptAudioError": ".errors",
    "DataError": ".errors",
    "DatasetNotFoundError": ".errors",
    "EmptyClassError": ".errors",
    "EmptySplitError": ".errors",
    "LayoutError": ".errors",
    "MissingToolError": ".errors",
    "UnsafeArchiveError": ".errors",
    "PRESETS": ".features",
    "FeatureConfig": ".features",
    "compute_features": ".features",
    "extract_features": ".features",
    "feature_config": ".features",
    "FSDDDataModule": ".fsdd",
    "HAR2_GROUPS": ".har",
    "HARDataModule": ".har",
    "ImageArrayDataModule": ".images",
    "data_root": ".paths",
    "dataset_dir": ".paths",
    "user_data_dir": ".paths",
    "DATASETS": ".registry",
    "get": ".registry",
    "names": ".registry",
    "SpeechCommandsDataModule": ".speech_commands",
    "detect_layout": ".speech_commands",
    "which_set": ".speech_commands",
    "synthesize": ".synth",
}

__all__ = sorted(_NAMES)

if TYPE_CHECKING:
    from .audio import Item, fix_length, load_audio  # noqa: F401
    from .base import ArrayDataset, BaseDataModule  # noqa: F401
    from .cache import cached_features  # noqa: F401
    from .downloader import ARCHIVES, cannot_download, download, download_fsdd, fetch, safe_extract  # noqa: F401
    from .errors import (  # noqa: F401
        ChecksumError,
        CorruptAudioError,
        DataError,
        DatasetNotFoundError,
        EmptyClassError,
        EmptySplitError,
        LayoutError,
        MissingToolError,
        UnsafeArchiveError,
    )
    from .features import PRESETS, FeatureConfig, compute_features, extract_features, feature_config  # noqa: F401
    from .fsdd import FSDDDataModule  # noqa: F401
    from .har import HAR2_GROUPS, HARDataModule  # noqa: F401
    from .images import ImageArrayDataModule  # noqa: F401
    from .paths import data_root, dataset_dir, user_data_dir  # noqa: F401
    from .registry import DATASETS, get, names  # noqa: F401
    from .speech_commands import SpeechCommandsDataModule, detect_layout, which_set  # noqa: F401
    from .synth import synthesize  # noqa: F401


def __getattr__(name: str):
    if name not in _NAMES:
        raise AttributeError(f"module 'strrnn.data' has no attribute {name!r}")
    value = getattr(import_module(_NAMES[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_NAMES})
