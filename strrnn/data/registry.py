"""One registry of data modules: ``strrnn.data.get(name, root=None, **options)``."""

from __future__ import annotations

from collections.abc import Callable

from . import fsdd, har, images, speech_commands

#: name -> factory ``(root=None, **options) -> LightningDataModule``
DATASETS: dict[str, Callable] = {
    "google12": speech_commands.google12,
    "google13": speech_commands.google13,
    "google30": speech_commands.google30,
    "google35": speech_commands.google35,
    "speech_commands": speech_commands.speech_commands,
    "fsdd": fsdd.fsdd,
    "har2": har.har2,
    "har6": har.har6,
    "mnist5k": images.mnist5k,
    "digits": images.digits,
}


def names() -> list[str]:
    """The dataset names :func:`get` accepts."""
    return list(DATASETS)


def get(name: str, root=None, **options):
    """Build the data module for ``name`` (call ``.setup()`` before asking for loaders).

    Common options: ``batch_size=100``, ``num_workers=0``, ``seed=0``, ``normalization=None`` (reuse stored
    statistics), ``strict=False``. Speech: ``features="logmel32"|"logmel40"|"mfcc"`` (or a FeatureConfig),
    ``alignment="end"|"center"|"start"``, ``cache_dir`` (``False`` disables caching), ``workers``.
    Speech Commands: ``version="v0.01"|"v0.02"``, ``download=False``, ``words=[...]`` for ``speech_commands``.
    FSDD: ``val_takes``, ``holdout_speaker``. HAR: ``val_fraction``.
    """
    try:
        factory = DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}") from None
    return factory(root, **options)
