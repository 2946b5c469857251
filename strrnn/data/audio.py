"""Reading audio clips: mono mix-down, resampling and alignment to a fixed clip length."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import soundfile as sf

ALIGNMENTS = ("end", "center", "start")


@dataclass(frozen=True)
class Item:
    """One clip to featurize: a file, optionally a window of it, scaled by ``gain``.

    ``offset``/``length`` are in samples at the *target* sample rate (after resampling); ``None``
    means the whole file. Background-noise crops (the ``_silence_`` class) use them.
    """

    path: str
    offset: int | None = None
    length: int | None = None
    gain: float = 1.0


def resample(y: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample a 1-D signal with soxr (high quality); a no-op when the rates agree."""
    if orig_sr == target_sr:
        return y
    import soxr

    return soxr.resample(y, orig_sr, target_sr, quality="HQ").astype(np.float32, copy=False)


def load_audio(path: str, sample_rate: int = 16000) -> np.ndarray:
    """Read a WAV (or any libsndfile format) as float32 mono at ``sample_rate``.

    Stereo and multichannel files are mixed down (channel mean); other rates are resampled.
    Raises ``ValueError`` for an empty file and whatever libsndfile raises for a corrupt one.
    """
    y, sr = sf.read(path, dtype="float32", always_2d=True)
    if y.shape[0] == 0:
        raise ValueError(f"{path}: no audio frames")
    y = y.mean(axis=1) if y.shape[1] > 1 else y[:, 0]
    if not np.all(np.isfinite(y)):
        raise ValueError(f"{path}: non-finite samples")
    return resample(np.ascontiguousarray(y), int(sr), sample_rate)


def fix_length(y: np.ndarray, length: int, alignment: str = "end") -> np.ndarray:
    """Pad with zeros or crop ``y`` to exactly ``length`` samples.

    ``end``: pad at the start so the word ends at the last sample; crop keeping the end (the classic
    Speech Commands / FastGRNN pipelines left-pad, so a classifier reading the last state sees speech).
    ``start``: pad at the end, crop keeping the start. ``center``: pad/crop evenly on both sides.
    """
    if alignment not in ALIGNMENTS:
        raise ValueError(f"alignment must be one of {ALIGNMENTS}, got {alignment!r}")
    n = y.shape[-1]
    if n == length:
        return y
    if n > length:
        if alignment == "end":
            return y[n - length :]
        if alignment == "start":
            return y[:length]
        a = (n - length) // 2
        return y[a : a + length]
    pad = length - n
    before = {"end": pad, "start": 0, "center": pad // 2}[alignment]
    return np.pad(y, (before, pad - before))


def load_item(item: Item, sample_rate: int, length: int, alignment: str) -> np.ndarray:
    """Load an :class:`Item` and return exactly ``length`` samples (float32)."""
    y = load_audio(item.path, sample_rate)
    if item.offset is not None or item.length is not None:
        start = item.offset or 0
        y = y[start : start + (item.length or length)]
        if y.size == 0:
            raise ValueError(f"{item.path}: empty window at offset {start}")
    if item.gain != 1.0:
        y = y * np.float32(item.gain)
    return fix_length(y, length, alignment).astype(np.float32, copy=False)
