"""Inference on real audio with a trained run: ``strrnn.load(run_dir).predict(["a.wav", waveform, ...])``.

A :class:`Predictor` holds a run's exported model (``exported.pt``: plain modules, no STR parametrization) and
rebuilds the inputs exactly as training and ``strrnn evaluate`` saw them: the clip is read as mono
float32 at the run's sample rate (other rates resampled), padded or cropped to the clip length with the data
set's alignment, featurized with the run's feature preset and normalized with the statistics stored with the
run. The command-line front end is ``strrnn predict``.

An item that cannot be used raises :class:`InputError` before anything is scored. An item that is scored but
probably not as meant -- a truncated file, a recording much longer than the model's clip (only one clip's worth is
read), samples beyond [-1, 1] -- gives an :class:`InputWarning` naming it.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch import nn

from .artifacts import exported_datamodule, load_exported
from .data.audio import fix_length, load_audio, resample
from .data.base import stats_arrays
from .data.features import FeatureConfig, compute_features
from .data.speech_datamodule import AudioDataModule

__all__ = ["Predictor", "InputError", "InputWarning", "load"]

#: a recording this much longer than the model's clip is mostly not scored: say so
LONG_CLIP_FACTOR = 1.5
# libsndfile's own account of a file shorter than its header says ("data : 7958 (should be 156)")
_TRUNCATED = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
# what libsndfile says about bytes in no format it knows: "File does not exist ... (possibly a pipe?)"
_UNKNOWN_FORMAT = ("Format not recognised", "does not exist or is not a regular file", "unknown format")


class InputError(ValueError):
    """An item given to :meth:`Predictor.predict` cannot be used; the message names it and says why."""


class InputWarning(UserWarning):
    """An item was scored, but probably not as meant (truncated, much longer than one clip, samples beyond
    [-1, 1]); the message names it."""


def _warn(message: str) -> None:
    warnings.warn(message, InputWarning, stacklevel=4)


def _sample_rate(value, default: int) -> int:
    """``value`` (Hz) as a positive int, or ``default`` for None; :class:`InputError` otherwise."""
    if value is None:
        return default
    ok = (not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))
          and math.isfinite(value) and value > 0 and float(value).is_integer())
    if not ok:
        raise InputError(f"sample_rate must be positive, a whole number of Hz (e.g. 16000), got {value!r}")
    return int(value)


def _batch_size(value) -> int:
    """``value`` as a positive int; :class:`InputError` otherwise (a batch of 0 or -1 would score nothing)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(f"batch_size must be a positive integer, got {value!r}")
    return int(value)


def _device(device) -> torch.device:
    """``device`` as a usable ``torch.device``; ``ValueError`` naming it (and the fix) otherwise."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r}; use 'cpu', 'cuda' or 'cuda:N'") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: no CUDA device is usable on this machine "
                         "(torch.cuda.is_available() is False); use 'cpu'")
    try:
        torch.empty(0, device=parsed)
    except Exception as err:  # noqa: BLE001 - no driver, no such device index, a build without the backend
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"device {device!r} is not usable on this machine ({first[:120]}); use 'cpu'") from None
    return parsed


def _unreadable_reason(exc: Exception, path: Path) -> str:
    reason = str(exc).removeprefix(f"{path}: ")
    reason = re.sub(r"^Error opening '.*?': ", "", reason)
    if any(text in reason for text in _UNKNOWN_FORMAT):
        return "unknown or damaged audio format; WAV, FLAC, OGG/Vorbis, MP3 and the other libsndfile formats are read"
    return reason


def _describe(item, index: int) -> str:
    return str(item) if isinstance(item, (str, os.PathLike)) else f"waveform {index}"


class Predictor:
    """Class probabilities and labels of audio clips under a trained run's exported model.

    Attributes: ``labels`` (class names in output order), ``features`` (the run's :class:`FeatureConfig`),
    ``sample_rate``, ``device``, ``model`` (the exported ``nn.Module``, in eval mode).
    """

    def __init__(self, model: nn.Module, labels: list[str], features: FeatureConfig, normalization: dict | None,
                 device: str | torch.device = "cpu", batch_size: int = 256) -> None:
        self.labels = list(labels)
        self.features = features
        self.sample_rate = features.sample_rate
        self.batch_size = batch_size
        self.device = _device(device)
        self.model = model.to(self.device).eval()
        self._mean = self._std = None
        if normalization is not None:
            self._mean, self._std = stats_arrays(normalization, features.shape)

    @property
    def batch_size(self) -> int:
        """Items featurized and scored together (a positive integer)."""
        return self._batch_size

    @batch_size.setter
    def batch_size(self, value) -> None:
        self._batch_size = _batch_size(value)

    def __repr__(self) -> str:
        return (f"Predictor(labels={self.labels}, features={self.features.kind}{self.features.num_features}, "
                f"sample_rate={self.sample_rate}, device={str(self.device)!r})")

    # ---- inputs ------------------------------------------------------------------------------------------
    def waveform(self, item, index: int = 0, sample_rate: int | None = None) -> np.ndarray:
        """One item as the model's clip: float32 ``(num_samples,)`` at :attr:`sample_rate`.

        ``item`` is a path to an audio file (any rate, mono or multichannel: mixed down), or a 1-D float waveform
        in [-1, 1] (int16 samples are scaled by 1/32768) at ``sample_rate`` (default: the run's). Raises
        :class:`InputError` naming the item; warns (:class:`InputWarning`) about a truncated file, a recording
        longer than :data:`LONG_CLIP_FACTOR` clips (one clip of it is read, as the data set aligns its clips) and
        samples beyond [-1, 1] (scored as they are).
        """
        name = _describe(item, index)
        rate = _sample_rate(sample_rate, self.sample_rate)
        if isinstance(item, (str, os.PathLike)):
            path = Path(item)
            if path.is_dir():
                raise InputError(f"{name}: is a folder, not an audio file")
            if not path.is_file():
                raise InputError(f"{name}: no such file")
            if path.stat().st_size == 0:
                raise InputError(f"{name}: empty file (0 bytes)")
            try:
                y = load_audio(str(path), self.sample_rate)
            except Exception as exc:  # noqa: BLE001 - libsndfile's errors have several types
                raise InputError(f"{name}: not a readable audio file ({_unreadable_reason(exc, path)})") from None
            self._warn_if_truncated(path, name)
        else:
            y = self._array(item, name, rate)
        self._warn_if_unusual(y, name)
        return fix_length(y, self.features.num_samples, self.features.alignment).astype(np.float32, copy=False)

    @staticmethod
    def _warn_if_truncated(path: Path, name: str) -> None:
        try:
            log = sf.info(str(path)).extra_info
        except Exception:  # noqa: BLE001 - it was just read; no account of it is no reason to fail
            return
        match = _TRUNCATED.search(log)
        if match and int(match.group(2)) < int(match.group(1)):
            _warn(f"{name}: truncated file: its header announces {int(match.group(1)):,} bytes of audio, it holds "
                  f"{int(match.group(2)):,}; scored what there is")

    def _warn_if_unusual(self, y: np.ndarray, name: str) -> None:
        clip = self.features.num_samples
        if y.shape[-1] > LONG_CLIP_FACTOR * clip:
            part = {"end": "last", "start": "first", "center": "middle"}.get(self.features.alignment, "one")
            _warn(f"{name}: {y.shape[-1] / self.sample_rate:.2f} s of audio, but the model reads one "
                  f"{clip / self.sample_rate:.2f} s clip: only its {part} {clip / self.sample_rate:.2f} s were scored "
                  "(cut the recording into clips to label all of it)")
        peak = float(np.abs(y).max()) if y.size else 0.0
        if peak > 1.0:
            _warn(f"{name}: samples reach {peak:.4g}, beyond the [-1, 1] of float audio (the model learned from "
                  "audio in [-1, 1]); scored as given — scale it first (int16-range floats: divide by 32768)")

    def _array(self, item, name: str, rate: int) -> np.ndarray:
        if isinstance(item, torch.Tensor):
            item = item.detach().cpu()
            if item.is_floating_point() and item.dtype not in (torch.float32, torch.float64):
                item = item.float()  # numpy has no bfloat16
            item = item.numpy()
        if not isinstance(item, np.ndarray):
            raise InputError(f"{name}: expected a file path or a 1-D waveform array, got {type(item).__name__}")
        if item.ndim != 1:
            raise InputError(f"{name}: shape {tuple(item.shape)}; pass a 1-D mono waveform (mix a "
                             "multichannel one down first, e.g. x.mean(axis=0) for channels first)")
        if item.size == 0:
            raise InputError(f"{name}: empty (0 samples)")
        if item.dtype == np.int16:
            y = item.astype(np.float32) / 32768.0
        elif np.issubdtype(item.dtype, np.floating):
            y = item.astype(np.float32)
        else:
            raise InputError(f"{name}: dtype {item.dtype}; pass float samples in [-1, 1] (or int16)")
        if not np.all(np.isfinite(y)):
            raise InputError(f"{name}: NaN or infinite samples")
        return resample(np.ascontiguousarray(y), rate, self.sample_rate)

    def inputs(self, items, sample_rate: int | None = None) -> np.ndarray:
        """The model's inputs: float32 ``(n, T, F)`` -- features of each item, normalized like the training data."""
        items = _as_list(items)
        _sample_rate(sample_rate, self.sample_rate)  # a bad rate is refused before any item is read
        audio = np.stack([self.waveform(item, i, sample_rate) for i, item in enumerate(items)]) if items else \
            np.zeros((0, self.features.num_samples), np.float32)
        x = compute_features(audio, self.features)
        if self._mean is not None:
            x = (x - self._mean) / self._std
        return x.astype(np.float32, copy=False)

    # ---- outputs -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict_proba(self, items, sample_rate: int | None = None) -> np.ndarray:
        """Class probabilities: float32 array ``(n, len(labels))``, rows summing to 1, columns in :attr:`labels`
        order. ``items``: a list of paths and/or 1-D waveforms (a single path or waveform is one item).

        Raises:
            InputError: an item that cannot be used (nothing is returned for any item).
            RuntimeError: the model gave no finite probabilities for some item (never returned as a label).
        """
        items = _as_list(items)
        _sample_rate(sample_rate, self.sample_rate)
        out = np.full((len(items), len(self.labels)), np.nan, np.float32)  # a row never scored stays NaN
        for start in range(0, len(items), self.batch_size):
            x = torch.from_numpy(self.inputs(items[start : start + self.batch_size], sample_rate)).to(self.device)
            out[start : start + len(x)] = torch.softmax(self.model(x).float(), dim=-1).cpu().numpy()
        unscored = [_describe(items[i], i) for i in np.flatnonzero(~np.isfinite(out).all(axis=1))]
        if unscored:
            raise RuntimeError(f"no finite probabilities for {len(unscored)} item(s) ({', '.join(unscored[:3])}); "
                               "the model's outputs are NaN or infinite there")
        return out

    def predict(self, items, sample_rate: int | None = None) -> list[str]:
        """The most probable label of each item (a list of ``len(items)`` strings)."""
        return [self.labels[k] for k in self.predict_proba(items, sample_rate).argmax(axis=1)]


def _as_list(items) -> list:
    if isinstance(items, (str, os.PathLike, np.ndarray, torch.Tensor)):
        return [items]
    if not isinstance(items, Iterable):
        raise InputError(f"expected a list of file paths or waveforms, got {type(items).__name__}")
    return list(items)


def load(run_dir: str | os.PathLike, device: str | torch.device | None = None, batch_size: int = 256) -> Predictor:
    """The :class:`Predictor` of a finished ``python -m strrnn.train`` run folder (or its ``exported.pt``).

    ``device``: ``"cpu"``, ``"cuda"``, ... (default: CUDA when available, else the CPU). ``batch_size``: items
    scored together, a positive integer. Raises ``ValueError`` for a folder without an exported audio model, an
    unusable device (checked first) or batch size (:class:`InputError`).
    """
    if device is not None:
        _device(device)
    _batch_size(batch_size)
    model, payload = load_exported(run_dir)
    datamodule = exported_datamodule(payload)  # built only to read its feature settings
    if not isinstance(datamodule, AudioDataModule):
        raise ValueError(f"{run_dir}: the run was trained on {payload['config'].get('dataset')!r}, not on audio; "
                         "strrnn.load "
                         "predicts audio clips only")
    features = datamodule.features
    if list(features.shape) != list(payload["input_shape"]):
        raise ValueError(f"{run_dir}: features {features.shape} do not match the model's input "
                         f"{tuple(payload['input_shape'])}")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return Predictor(model, payload["class_names"], features, payload.get("normalization"), device, batch_size)
