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


@dataclass(frozen=True)
class Augmentation:
    """Training-time augmentation of fixed-length clips, as keyword spotting always uses (TensorFlow's
    ``speech_commands`` defaults): a random time shift of up to ``shift_ms`` either way (zero-filled), then, with
    probability ``noise_probability``, background noise added at a gain drawn uniformly from ``[0, noise_gain]``,
    and the result clipped to [-1, 1]."""

    shift_ms: float = 100.0
    noise_probability: float = 0.8
    noise_gain: float = 0.1

    def __post_init__(self):
        if self.shift_ms < 0 or self.noise_gain < 0 or not 0 <= self.noise_probability <= 1:
            raise ValueError(f"augmentation needs shift_ms >= 0, noise_gain >= 0 and a probability in [0, 1]: {self}")


def augment_waveform(y: np.ndarray, rng: np.random.Generator, sample_rate: int, aug: Augmentation,
                     noises: list[np.ndarray] = ()) -> np.ndarray:
    """One augmented copy of ``y`` (float32 ``(N,)``); ``noises`` are 1-D noise recordings to mix in (any length)."""
    n = y.shape[-1]
    limit = int(round(aug.shift_ms * sample_rate / 1000))
    shift = int(rng.integers(-limit, limit + 1)) if limit else 0
    out = np.zeros_like(y)
    if shift >= 0:
        out[shift:] = y[: n - shift]
    else:
        out[:shift] = y[-shift:]
    if noises and aug.noise_gain > 0 and rng.random() < aug.noise_probability:
        noise = noises[int(rng.integers(len(noises)))]
        if noise.shape[-1] < n:
            noise = np.tile(noise, -(-n // noise.shape[-1]))
        start = int(rng.integers(0, noise.shape[-1] - n + 1))
        out = out + np.float32(rng.uniform(0.0, aug.noise_gain)) * noise[start : start + n]
    return np.clip(out, -1.0, 1.0).astype(np.float32, copy=False)
