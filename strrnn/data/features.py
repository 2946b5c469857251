"""Speech features: log-mel filterbank energies (the FastGRNN/STR setting) and MFCC, via librosa.

The default, ``logmel32``, is librosa's log-mel: 32 energies from a 25 ms **Hann** window (400 samples at
16 kHz, FFT size 512) with a 10 ms hop (160 samples), no pre-emphasis, librosa's **Slaney** mel bank (area-
normalised triangles), the power spectrum of float samples in [-1, 1] and ``log(x + 1e-6)``. Frames are placed
like ``python_speech_features.logfbank``: frame ``t`` covers samples ``[160 t, 160 t + 400)`` and the last frame
is zero-padded, so a 1-s clip gives ``1 + ceil((16000 - 400) / 160) = 99`` frames -> features ``(99, 32)``.

``fbank32`` (alias ``classic``) reproduces the log filter-bank of EdgeML's keyword-spotting pipeline, where the
FastGRNN/STR Google-12 figures come from: ``python_speech_features.fbank(signal, 16000, 0.025, 0.01, nfilt=32,
nfft=512, preemph=0.97, winfunc=numpy.hamming)`` on int16-scale samples, then ``log(x + 1e-10)``. That is:
pre-emphasis 0.97, **Hamming** window, ``|rfft_512|^2 / 512``, 32 HTK-mel triangles with peak 1 (not area-
normalised) on FFT bins ``floor(513 f / sr)``. It is computed here with numpy alone; the test suite checks it
against python_speech_features on real clips.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace

import librosa
import numpy as np

from .audio import ALIGNMENTS, Item, load_item

#: Bumped whenever the numerical definition of a feature changes (invalidates every cache).
FEATURE_VERSION = 1
KINDS = ("logmel", "mfcc", "fbank")
#: Pre-emphasis coefficient and sample scale of the ``fbank`` kind (python_speech_features on int16 samples).
FBANK_PREEMPHASIS = 0.97
INT16_SCALE = 32768.0


@dataclass(frozen=True)
class FeatureConfig:
    """Everything that determines the features of a clip (it is part of the cache key)."""

    kind: str = "logmel"  # "logmel" (librosa), "mfcc" (librosa) or "fbank" (python_speech_features / EdgeML)
    n_mels: int = 32
    n_mfcc: int = 13
    sample_rate: int = 16000
    clip_seconds: float = 1.0
    win_length: int = 400
    hop_length: int = 160
    n_fft: int = 512
    fmin: float = 0.0
    fmax: float | None = None
    eps: float = 1e-6
    alignment: str = "end"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"feature kind must be one of {KINDS}, got {self.kind!r}")
        if self.alignment not in ALIGNMENTS:
            raise ValueError(f"alignment must be one of {ALIGNMENTS}, got {self.alignment!r}")
        if self.win_length > self.n_fft:
            raise ValueError("win_length must be <= n_fft")

    @property
    def num_samples(self) -> int:
        return int(round(self.sample_rate * self.clip_seconds))

    @property
    def num_frames(self) -> int:
        return 1 + math.ceil(max(self.num_samples - self.win_length, 0) / self.hop_length)

    @property
    def num_features(self) -> int:
        return self.n_mfcc if self.kind == "mfcc" else self.n_mels

    @property
    def shape(self) -> tuple[int, int]:
        """Shape ``(T, F)`` of one clip's features."""
        return (self.num_frames, self.num_features)

    def to_dict(self) -> dict:
        return asdict(self)

    def digest(self) -> str:
        blob = json.dumps({"v": FEATURE_VERSION, **self.to_dict()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()


#: Named presets accepted by ``features=`` in the data modules.
PRESETS = {
    "logmel32": FeatureConfig(kind="logmel", n_mels=32),
    "logmel40": FeatureConfig(kind="logmel", n_mels=40),
    "mfcc": FeatureConfig(kind="mfcc", n_mels=40, n_mfcc=13),
    "fbank32": FeatureConfig(kind="fbank", n_mels=32, eps=1e-10),
    "classic": FeatureConfig(kind="fbank", n_mels=32, eps=1e-10),
}


def feature_config(features: str | FeatureConfig | dict = "logmel32", **overrides) -> FeatureConfig:
    """Resolve a preset name, a dict or a :class:`FeatureConfig`, then apply ``overrides``."""
    if isinstance(features, FeatureConfig):
        cfg = features
    elif isinstance(features, dict):
        cfg = FeatureConfig(**features)
    elif features in PRESETS:
        cfg = PRESETS[features]
    else:
        raise ValueError(f"unknown features {features!r}; choose one of {sorted(PRESETS)} or a FeatureConfig")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return replace(cfg, **overrides) if overrides else cfg


@functools.lru_cache(maxsize=8)
def fbank_filters(n_filters: int, n_fft: int, sample_rate: int, fmin: float = 0.0, fmax: float | None = None):
    """python_speech_features' mel bank: ``(n_filters, n_fft // 2 + 1)`` HTK-mel triangles of peak 1.

    Edges are ``n_filters + 2`` points evenly spaced on the HTK mel scale (``2595 log10(1 + f / 700)``) between
    ``fmin`` and ``fmax`` (default ``sample_rate / 2``), rounded down to FFT bins ``floor((n_fft + 1) f / sr)``.
    """
    fmax = sample_rate / 2 if fmax is None else fmax
    if not 0 <= fmin < fmax <= sample_rate / 2:
        raise ValueError(f"need 0 <= fmin < fmax <= sample_rate / 2, got fmin={fmin}, fmax={fmax}")
    mels = np.linspace(librosa.hz_to_mel(fmin, htk=True), librosa.hz_to_mel(fmax, htk=True), n_filters + 2)
    edges = np.floor((n_fft + 1) * librosa.mel_to_hz(mels, htk=True) / sample_rate)
    bins = np.arange(n_fft // 2 + 1, dtype=np.float64)[None, :]
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        rise = np.where((bins >= lo) & (bins < mid), (bins - lo) / (mid - lo), 0.0)
        fall = np.where((bins >= mid) & (bins < hi), (hi - bins) / (hi - mid), 0.0)
    out = rise + fall
    out.setflags(write=False)
    return out


def _fbank(audio: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """The ``fbank`` kind: ``audio`` (..., N) float in [-1, 1] -> ``log(fbank + eps)`` (..., T, n_mels) float64.

    Computed in float64 throughout, as python_speech_features does (a float32 FFT is off by up to 3% in quiet bands).
    """
    x = audio.astype(np.float64) * INT16_SCALE
    if x.shape[-1]:
        x = np.concatenate([x[..., :1], x[..., 1:] - FBANK_PREEMPHASIS * x[..., :-1]], axis=-1)
    total = (cfg.num_frames - 1) * cfg.hop_length + cfg.win_length
    pad = [(0, 0)] * (x.ndim - 1) + [(0, max(total - x.shape[-1], 0))]
    x = np.pad(x, pad)[..., :total]
    frames = np.lib.stride_tricks.sliding_window_view(x, cfg.win_length, axis=-1)[..., :: cfg.hop_length, :]
    frames = frames * np.hamming(cfg.win_length)  # (..., T, win)
    power = np.abs(np.fft.rfft(frames, n=cfg.n_fft, axis=-1)) ** 2 / cfg.n_fft
    bank = fbank_filters(cfg.n_mels, cfg.n_fft, cfg.sample_rate, cfg.fmin, cfg.fmax)
    return np.log(power @ bank.T + cfg.eps)


def compute_features(audio: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Features of fixed-length clips: ``audio`` (..., N) float samples in [-1, 1] -> float32 (..., T, F)."""
    audio = np.asarray(audio, dtype=np.float32)
    if cfg.kind == "fbank":
        return _fbank(audio, cfg).astype(np.float32)
    # Place frame t at [t*hop, t*hop + win): librosa centres the window inside the n_fft frame,
    # so shift by (n_fft - win) // 2 and zero-pad the tail for the last (partial) frame.
    lead = (cfg.n_fft - cfg.win_length) // 2
    total = cfg.n_fft + (cfg.num_frames - 1) * cfg.hop_length
    pad = [(0, 0)] * (audio.ndim - 1) + [(lead, max(total - lead - audio.shape[-1], 0))]
    y = np.pad(audio, pad)[..., :total]
    mel = librosa.feature.melspectrogram(
        y=y,
        sr=cfg.sample_rate,
        n_fft=cfg.n_fft,
        hop_length=cfg.hop_length,
        win_length=cfg.win_length,
        window="hann",
        center=False,
        power=2.0,
        n_mels=cfg.n_mels,
        fmin=cfg.fmin,
        fmax=cfg.fmax,
    )
    logmel = np.log(mel + cfg.eps)
    if cfg.kind == "mfcc":
        out = librosa.feature.mfcc(S=logmel, n_mfcc=cfg.n_mfcc)
    else:
        out = logmel
    return np.swapaxes(out, -1, -2).astype(np.float32)


def _featurize_chunk(items: list[Item], cfg: FeatureConfig) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Load and featurize a chunk; unreadable clips give zero rows and an entry in the bad list."""
    audio = np.zeros((len(items), cfg.num_samples), np.float32)
    bad = []
    for i, item in enumerate(items):
        try:
            audio[i] = load_item(item, cfg.sample_rate, cfg.num_samples, cfg.alignment)
        except Exception as exc:  # noqa: BLE001 - any decoder failure marks the file corrupt
            bad.append((i, f"{item.path}: {type(exc).__name__}: {exc}"))
    return compute_features(audio, cfg), bad


def extract_features(
    items: list[Item],
    cfg: FeatureConfig,
    out: np.ndarray | None = None,
    workers: int | None = None,
    chunk_size: int = 128,
    progress: bool = True,
    desc: str = "features",
) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Featurize ``items`` in parallel (threads: decoding, resampling and FFTs release the GIL).

    Writes into ``out`` (e.g. a memory-mapped ``.npy``) when given. Returns ``(features, bad)`` where
    ``bad`` lists ``(index, reason)`` for clips that could not be read (their rows are zero).
    """
    n = len(items)
    if out is None:
        out = np.zeros((n, *cfg.shape), np.float32)
    workers = workers or min(os.cpu_count() or 1, 8)
    starts = list(range(0, n, chunk_size))
    bad: list[tuple[int, str]] = []
    from tqdm.auto import tqdm

    bar = tqdm(total=n, desc=desc, unit="clip", disable=not progress, leave=False)
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(_featurize_chunk, items[s : s + chunk_size], cfg) for s in starts]
            for s, fut in zip(starts, futures, strict=True):
                feats, chunk_bad = fut.result()
                out[s : s + len(feats)] = feats
                bad.extend((s + i, why) for i, why in chunk_bad)
                bar.update(len(feats))
    finally:
        bar.close()
    return out, bad


def warn_bad(bad: list[str], what: str) -> None:
    """Report skipped files (never silently): one warning naming the count and the first few."""
    if not bad:
        return
    shown = "\n  ".join(bad[:10]) + ("\n  ..." if len(bad) > 10 else "")
    warnings.warn(f"{what}: skipped {len(bad)} unreadable audio file(s):\n  {shown}", stacklevel=3)
