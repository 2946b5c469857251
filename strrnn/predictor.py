"""Inference on real audio with a trained run: ``strrnn.load(run_dir).predict(["a.wav", waveform, ...])``.

A :class:`Predictor` holds a run's exported model (``exported.pt``: plain modules, no STR parametrization) and
rebuilds the inputs exactly as training and ``strrnn evaluate`` saw them: the clip is read as mono
float32 at the run's sample rate (other rates resampled), padded or cropped to the clip length with the data
set's alignment, featurized with the run's feature preset and normalized with the statistics stored with the
run. The command-line front end is ``strrnn predict``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .artifacts import exported_datamodule, load_exported
from .data.audio import fix_length, load_audio, resample
from .data.base import stats_arrays
from .data.features import FeatureConfig, compute_features
from .data.speech_datamodule import AudioDataModule

__all__ = ["Predictor", "InputError", "load"]


class InputError(ValueError):
    """An item given to :meth:`Predictor.predict` cannot be used; the message names it and says why."""


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
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.batch_size = int(batch_size)
        self._mean = self._std = None
        if normalization is not None:
            self._mean, self._std = stats_arrays(normalization, features.shape)

    def __repr__(self) -> str:
        return (f"Predictor(labels={self.labels}, features={self.features.kind}{self.features.num_features}, "
                f"sample_rate={self.sample_rate}, device={str(self.device)!r})")

    # ---- inputs ------------------------------------------------------------------------------------------
    def waveform(self, item, index: int = 0, sample_rate: int | None = None) -> np.ndarray:
        """One item as the model's clip: float32 ``(num_samples,)`` at :attr:`sample_rate`.

        ``item`` is a path to an audio file (any rate, mono or multichannel: mixed down), or a 1-D float waveform
        in [-1, 1] (int16 samples are scaled by 1/32768) at ``sample_rate`` (default: the run's). Raises
        :class:`InputError` naming the item.
        """
        name = _describe(item, index)
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
                reason = str(exc).removeprefix(f"{path}: ")
                raise InputError(f"{name}: not a readable audio file ({reason})") from None
        else:
            y = self._array(item, name, sample_rate)
        return fix_length(y, self.features.num_samples, self.features.alignment).astype(np.float32, copy=False)

    def _array(self, item, name: str, sample_rate: int | None) -> np.ndarray:
        if isinstance(item, torch.Tensor):
            item = item.detach().cpu().numpy()
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
        rate = self.sample_rate if sample_rate is None else int(sample_rate)
        if rate <= 0:
            raise InputError(f"sample_rate must be positive, got {sample_rate}")
        return resample(np.ascontiguousarray(y), rate, self.sample_rate)

    def inputs(self, items, sample_rate: int | None = None) -> np.ndarray:
        """The model's inputs: float32 ``(n, T, F)`` -- features of each item, normalized like the training data."""
        items = _as_list(items)
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
        order. ``items``: a list of paths and/or 1-D waveforms (a single path or waveform is one item)."""
        items = _as_list(items)
        out = np.zeros((len(items), len(self.labels)), np.float32)
        for start in range(0, len(items), self.batch_size):
            x = torch.from_numpy(self.inputs(items[start : start + self.batch_size], sample_rate)).to(self.device)
            out[start : start + len(x)] = torch.softmax(self.model(x).float(), dim=-1).cpu().numpy()
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

    ``device``: ``"cpu"``, ``"cuda"``, ... (default: CUDA when available, else the CPU). Raises ``ValueError``
    for a folder without an exported audio model.
    """
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
