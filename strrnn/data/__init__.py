"""Speech, sensor and small image data for strrnn: Lightning data modules behind one registry.

    dm = strrnn.data.get("google12", root="data/speech_commands_v0.01")   # root=None: dataset_dir("google12")
    dm.setup(); x, y = next(iter(dm.train_dataloader()))   # x: (100, 99, 32) float32

Datasets: Speech Commands (``google12``, ``google13``, ``google30``, ``google35``, ``speech_commands``),
``fsdd``, UCI HAR (``har2``, ``har6``), ``mnist5k`` and ``digits``; synthetic speech in the Speech
Commands layout (:func:`synthesize`); downloads with :func:`download` / :func:`safe_extract`. Default folders
(``--data-dir`` > ``$STRRNN_<DATASET>`` > ``$STRRNN_DATA/<folder>`` > the user data folder): :func:`dataset_dir`;
``python -m strrnn.data where`` prints them.
"""

from .audio import Item, fix_length, load_audio
from .base import ArrayDataset, BaseDataModule
from .cache import cached_features
from .download import ARCHIVES, cannot_download, download, download_fsdd, fetch, safe_extract
from .errors import (
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
from .features import PRESETS, FeatureConfig, compute_features, extract_features, feature_config
from .fsdd import FSDDDataModule
from .har import HAR2_GROUPS, HARDataModule
from .images import ImageArrayDataModule
from .paths import data_root, dataset_dir, user_data_dir
from .registry import DATASETS, get, names
from .speech_commands import SpeechCommandsDataModule, detect_layout, which_set
from .synth import synthesize

__all__ = [
    "ARCHIVES",
    "ArrayDataset",
    "BaseDataModule",
    "ChecksumError",
    "CorruptAudioError",
    "DATASETS",
    "DataError",
    "DatasetNotFoundError",
    "EmptyClassError",
    "EmptySplitError",
    "FSDDDataModule",
    "FeatureConfig",
    "HAR2_GROUPS",
    "HARDataModule",
    "ImageArrayDataModule",
    "Item",
    "LayoutError",
    "MissingToolError",
    "PRESETS",
    "SpeechCommandsDataModule",
    "UnsafeArchiveError",
    "cached_features",
    "cannot_download",
    "compute_features",
    "data_root",
    "dataset_dir",
    "detect_layout",
    "download",
    "download_fsdd",
    "extract_features",
    "feature_config",
    "fetch",
    "fix_length",
    "get",
    "load_audio",
    "names",
    "safe_extract",
    "synthesize",
    "user_data_dir",
    "which_set",
]
