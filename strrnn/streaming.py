"""Keyword spotting on audio of any length, frame by frame: ``strrnn.streaming.spot(predictor, "long.wav")``.

A run's model was trained on clips of ``window`` seconds (1 s: 99 frames) with the word at the end (the data sets
end-align their clips). On a long recording it is run as overlapping *windows* of that length, one starting every
``hop`` seconds, and every window is stepped frame by frame:

Front end
    The features of the whole recording are computed with the run's own front end and normalization
    (:class:`strrnn.predictor.Predictor`): frame ``t`` covers samples ``[hop_length t, hop_length t + win_length)``
    exactly as in a clip, so a window's features are those of the clip cut at its samples (the last frame of a clip
    is zero-padded past the clip's end; a window's reads the next samples instead). The recording is preceded by
    ``window - hop`` seconds of zeros, as a clip is padded before a short word, so that a word at the very start is
    seen end-aligned too. Long recordings are featurized in chunks (one frame of overlap keeps ``fbank``'s
    pre-emphasis exact), so memory does not grow with the length beyond the waveform and the features.

Windows in flight
    ``K = ceil(window / hop)`` states step together as a batch: slot ``k`` is reset (the C export's ``init``) when
    a window starts at a frame ``s`` with ``(s / hop_frames) mod K = k``, every slot steps on every frame, and a
    slot whose window is complete yields that window's class posteriors (softmax of its logits). Engines:
    ``"torch"`` (the model's :meth:`strrnn.cells.RNN.step`, pooling and classifier applied per slot, since each
    slot has its own frame count for mean pooling), ``"onnx"`` (the step graph of :mod:`strrnn.deploy.onnx_graph`,
    whose state row holds that count), ``"c"`` (the C export's checker, :func:`strrnn.deploy.run_c`, fed every
    window as a clip -- the same frame-by-frame ``step`` inside, batched; its window must be the C's ``FRAMES``).

Posterior smoothing and detection (Chen, Parada & Heigold, "Small-footprint keyword spotting using deep neural
networks", ICASSP 2014, section 2.3)
    With ``p_j`` the posteriors of window ``j``, the smoothed posterior is the mean over the last ``smooth``
    windows, ``p'_j = (1 / n) sum_{k = j - n + 1}^{j} p_k`` with ``n = min(smooth, j + 1)``. Chen et al.'s
    confidence is the geometric mean over a keyword's sub-units of their largest ``p'`` in a sliding window; a
    whole-word classifier has one unit per keyword, so the confidence of keyword ``i`` is ``p'_ij`` and a keyword
    is *detected* while its ``p'`` is at least ``threshold`` and the largest among the keyword classes. Classes
    that are not keywords (by default every label written ``_like_this_``: ``_silence_``, ``_unknown_``) never
    fire. A run of consecutive windows above the threshold with the same keyword is one detection, reported at
    its peak: ``end`` is the end of the windows averaged there (their middle one's end, ``(smooth - 1) / 2``
    windows back), where an end-aligned model places the end of the word; ``start = end - window``. The
    ``confidence`` is the peak ``p'``.
"""

from __future__ import annotations

import math
import os
import subprocess
import tempfile
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from .data.features import compute_features

__all__ = ["Detection", "StreamSettings", "long_features", "window_posteriors", "detect", "spot", "ENGINES",
           "keyword_classes"]

ENGINES = ("torch", "onnx", "c")


@dataclass(frozen=True)
class Detection:
    """One detected keyword: ``label``, ``end`` (s, from the start of the audio; where the word ends), ``start``
    (``end - window``; the word lies in ``[start, end]``), ``confidence`` (the peak smoothed posterior, 0…1)."""

    label: str
    start: float
    end: float
    confidence: float


@dataclass(frozen=True)
class StreamSettings:
    """``window``, ``hop`` (s; ``window`` None: the run's clip length), ``smooth`` (windows averaged), ``threshold``
    (smoothed posterior that fires), ``ignore`` (labels that never fire; None: every ``_label_``), ``merge`` (s:
    detections closer than this are one word)."""

    window: float | None = None
    hop: float = 0.05
    smooth: int = 5
    threshold: float = 0.6
    ignore: tuple[str, ...] | None = None
    merge: float = 0.3

    def check(self) -> None:
        if self.window is not None and not self.window > 0:
            raise ValueError(f"--window must be positive, got {self.window}")
        if not self.hop > 0:
            raise ValueError(f"--hop must be positive, got {self.hop}")
        if self.smooth < 1:
            raise ValueError(f"--smooth must be at least 1, got {self.smooth}")
        if not 0 < self.threshold <= 1:
            raise ValueError(f"--threshold must lie in (0, 1], got {self.threshold}")
        if not self.merge >= 0:
            raise ValueError(f"--merge must be at least 0, got {self.merge}")


def keyword_classes(labels: list[str], ignore=None) -> np.ndarray:
    """Boolean mask of the classes that may fire: not in ``ignore`` (None: labels written ``_like_this_``)."""
    if ignore is None:
        return np.array([not (len(x) > 1 and x.startswith("_") and x.endswith("_")) for x in labels])
    return np.array([x not in set(ignore) for x in labels])


# ---- front end ---------------------------------------------------------------------------------------------------
def long_features(predictor, audio: np.ndarray, *, lead_samples: int = 0, chunk_frames: int = 6000) -> np.ndarray:
    """Normalized features of a whole recording, float32 ``(T, F)``, ``T = 1 + ceil((N - win) / hop_length)`` for
    ``N = lead_samples + len(audio)`` samples (``lead_samples`` zeros first).

    ``audio``: mono float samples at the predictor's rate. Frames are computed ``chunk_frames`` at a time, each
    chunk from one frame earlier than its first (then dropped), so every frame sees the samples it would see in one
    pass (``fbank``'s pre-emphasis reads the sample before). Normalization: the run's per-feature mean and std.
    """
    cfg = predictor.features
    y = np.concatenate([np.zeros(lead_samples, np.float32), np.asarray(audio, np.float32)])
    hop, win = cfg.hop_length, cfg.win_length
    total = 1 + math.ceil(max(len(y) - win, 0) / hop)
    out = np.empty((total, cfg.num_features), np.float32)
    for t0 in range(0, total, chunk_frames):
        t1 = min(t0 + chunk_frames, total)
        first = max(t0 - 1, 0)  # one frame of overlap (dropped below)
        seg = y[first * hop: (t1 - 1) * hop + win]
        n = 1 + math.ceil(max(len(seg) - win, 0) / hop)
        seg_cfg = replace(cfg, clip_seconds=max(len(seg), 1) / cfg.sample_rate)
        feats = compute_features(seg if len(seg) else np.zeros(1, np.float32), seg_cfg)[:n]
        out[t0:t1] = feats[t0 - first:]
    mean, std = predictor._mean, predictor._std
    if mean is not None:
        if np.asarray(mean).size != cfg.num_features:
            raise ValueError(f"the run's normalization has shape {np.shape(mean)}, not one value per feature "
                             f"({cfg.num_features},): frames cannot be normalized one at a time")
        out = (out - np.asarray(mean, np.float32).reshape(-1)) / np.asarray(std, np.float32).reshape(-1)
    return out.astype(np.float32, copy=False)


# ---- engines: K window states stepped together -------------------------------------------------------------------
class _TorchSlots:
    """``slots`` sequences stepped together through the model's ``rnn.step``, each with its own pooling state."""

    def __init__(self, model, slots: int) -> None:
        self.model, self.slots = model.eval(), slots
        self.state = None
        self.sum = torch.zeros(slots, model.rnn.hidden_size)
        self.count = torch.zeros(slots, 1)

    def reset(self, slot: int) -> None:
        if self.state is not None:
            for part in (self.state if isinstance(self.state, tuple) else (self.state,)):
                part[:, slot] = 0.0  # (layers, slots, H): the slot's state back to zeros
        self.sum[slot] = 0.0
        self.count[slot] = 0.0

    @torch.no_grad()
    def step(self, frame: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(frame, np.float32)).unsqueeze(0).expand(self.slots, -1)
        if self.state is None:
            self.state = self.model.rnn.init_state(self.slots)
        out, self.state = self.model.rnn.step(x.contiguous(), self.state)
        if self.model.pooling == "mean":
            self.sum += out
            self.count += 1.0
            out = self.sum / self.count
        return self.model.classifier(out).numpy()


class _OnnxSlots:
    """The same with the ONNX step graph (:func:`strrnn.deploy.onnx_graph.build_graphs`): state rows of zeros."""

    def __init__(self, session, slots: int) -> None:
        self.session, self.slots = session, slots
        self.state = np.zeros((slots, session.get_inputs()[1].shape[1]), np.float32)

    def reset(self, slot: int) -> None:
        self.state[slot] = 0.0

    def step(self, frame: np.ndarray) -> np.ndarray:
        x = np.repeat(np.asarray(frame, np.float32)[None], self.slots, axis=0)
        logits, self.state = self.session.run(["logits", "state_out"], {"frame": x, "state": self.state})
        return logits


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def window_posteriors(slots, features: np.ndarray, window: int, hop: int) -> tuple[np.ndarray, np.ndarray]:
    """Class posteriors of every window of ``window`` frames starting at frames ``0, hop, 2 hop, ...`` of
    ``features`` (T, F), stepped frame by frame with ``slots`` (an engine of ``ceil(window / hop)`` slots).

    Returns ``(ends, proba)``: ``ends`` (N,) the frame index one past each window's last frame, ``proba`` (N, C).
    """
    k = slots.slots
    if k * hop < window:
        raise ValueError(f"{k} slots cannot hold windows of {window} frames every {hop}")
    ends, proba = [], []
    for t in range(features.shape[0]):
        if t % hop == 0:
            slots.reset((t // hop) % k)
        logits = slots.step(features[t])
        start = t + 1 - window
        if start >= 0 and start % hop == 0:  # the window that started at `start` is complete
            ends.append(t + 1)
            proba.append(_softmax(logits[(start // hop) % k]))
    classes = 0 if not proba else len(proba[0])
    return np.asarray(ends, np.int64), np.asarray(proba, np.float64).reshape(len(proba), classes)


def _c_posteriors(executable, raw: np.ndarray, window: int, hop: int) -> tuple[np.ndarray, np.ndarray]:
    """The C checker on every window of raw (unnormalized) features, each fed as one clip."""
    from .deploy import run_c

    starts = np.arange(0, raw.shape[0] - window + 1, hop)
    if len(starts) == 0:
        return np.zeros(0, np.int64), np.zeros((0, 0))
    clips = np.lib.stride_tricks.sliding_window_view(raw, window, axis=0)[starts].transpose(0, 2, 1)
    logits = np.concatenate([run_c(executable, clips[i: i + 512]) for i in range(0, len(clips), 512)])
    return starts + window, _softmax(logits)


# ---- smoothing and detection ---------------------------------------------------------------------------------------
def detect(proba: np.ndarray, ends_s: np.ndarray, labels: list[str], *, smooth: int = 5, threshold: float = 0.6,
           ignore=None, window_s: float = 1.0, merge: float = 0.3) -> list[Detection]:
    """Keywords in a sequence of window posteriors (see the module docstring).

    Args:
        proba: (N, C) posteriors of consecutive windows; ``ends_s`` (N,) their end times in seconds.
        labels: the C class names; ``ignore``: labels that never fire (None: every ``_label_``).
        smooth: windows averaged; threshold: smoothed posterior that fires; window_s: window length (for ``start``);
        merge: detections whose ends lie closer than this (s) are one word: the most confident is kept.
    """
    mask = keyword_classes(labels, ignore)
    found, event = [], None  # event: [class, peak, index of the peak]
    history: deque = deque(maxlen=smooth)
    lag = (smooth - 1) // 2
    for j, p in enumerate(np.asarray(proba, np.float64)):
        history.append(p)
        smoothed = np.mean(history, axis=0)
        scores = np.where(mask, smoothed, -1.0)
        best = int(scores.argmax())
        hit = scores[best] >= threshold
        if event is not None and (not hit or best != event[0]):
            found.append(_detection(event, ends_s, labels, lag, window_s))
            event = None
        if hit:
            if event is None:
                event = [best, scores[best], j]
            elif scores[best] > event[1]:
                event[1], event[2] = scores[best], j
    if event is not None:
        found.append(_detection(event, ends_s, labels, lag, window_s))
    return _merge(found, merge)


def _merge(found: list[Detection], merge: float) -> list[Detection]:
    """Keep the most confident of detections whose ends lie within ``merge`` s of the previous one's (a word's
    first part can look like another keyword: "f-" of five like four, for a window or two before the word ends)."""
    kept: list[Detection] = []
    for d in found:
        if kept and d.end - kept[-1].end < merge:
            if d.confidence > kept[-1].confidence:
                kept[-1] = d
            continue
        kept.append(d)
    return kept


def _detection(event, ends_s, labels, lag: int, window_s: float) -> Detection:
    cls, peak, j = event
    # the smoothed value at window j averages windows j - smooth + 1 .. j: its middle one's end
    end = float(ends_s[max(j - lag, 0)])
    return Detection(labels[cls], end - window_s, end, float(peak))


# ---- everything together -------------------------------------------------------------------------------------------
def _frames(seconds: float, cfg) -> int:
    """Frames of a window of ``seconds``: what a clip of that length gives."""
    samples = int(round(seconds * cfg.sample_rate))
    return 1 + math.ceil(max(samples - cfg.win_length, 0) / cfg.hop_length)


def spot(predictor, audio, settings: StreamSettings | None = None, *, engine: str = "torch",
         engine_file: str | os.PathLike | None = None, sample_rate: int | None = None) -> list[Detection]:
    """Detected keywords of a recording (a path, or a 1-D waveform at ``sample_rate``, default the run's).

    ``predictor``: :func:`strrnn.load`'s :class:`~strrnn.predictor.Predictor` of the run. ``engine``: ``"torch"``,
    ``"onnx"`` (``engine_file``: a ``.step.onnx`` written by ``strrnn export --onnx``; default: the step graph
    built in memory) or ``"c"`` (``engine_file``: a checker compiled from ``strrnn export --c``; default: written
    and compiled in a temporary folder). Raises ``ValueError`` (one line) for bad settings or inputs.
    """
    settings = settings or StreamSettings()
    settings.check()
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose one of: {', '.join(ENGINES)}")
    cfg = predictor.features
    y = _waveform(predictor, audio, sample_rate)
    window_s = settings.window if settings.window is not None else cfg.num_samples / cfg.sample_rate
    window = _frames(window_s, cfg)
    hop = max(1, int(round(settings.hop * cfg.sample_rate / cfg.hop_length)))
    # zeros before the recording, as a clip is padded before a short word: the first window ends one hop in
    lead = max((window - hop) * cfg.hop_length, 0)
    features = long_features(predictor, y, lead_samples=lead)
    if engine == "c":
        with tempfile.TemporaryDirectory(prefix="strrnn-stream-c-") as folder:
            exe = _c_checker(predictor, engine_file, window, Path(folder))
            ends, proba = _c_posteriors(exe, _raw(predictor, features), window, hop)
    else:
        slots = math.ceil(window / hop)
        engine_slots = _TorchSlots(predictor.model.cpu(), slots) if engine == "torch" else \
            _OnnxSlots(_onnx_session(predictor, engine_file), slots)
        ends, proba = window_posteriors(engine_slots, features, window, hop)
    if len(ends) == 0:
        return []
    # a window ending one past frame t - 1 ends at sample hop_length (t - 1) + win_length; the lead is not audio
    ends_s = ((ends - 1) * cfg.hop_length + cfg.win_length - lead) / cfg.sample_rate
    return detect(proba, ends_s, predictor.labels, smooth=settings.smooth, threshold=settings.threshold,
                  ignore=settings.ignore, window_s=window_s, merge=settings.merge)


def _waveform(predictor, audio, sample_rate) -> np.ndarray:
    from .data.audio import load_audio
    from .predictor import InputError

    if isinstance(audio, (str, os.PathLike)):
        path = Path(audio)
        if not path.is_file():
            raise InputError(f"{path}: no such file")
        try:
            return load_audio(str(path), predictor.sample_rate)
        except Exception as exc:  # noqa: BLE001 - libsndfile's errors have several types
            raise InputError(f"{path}: not a readable audio file ({str(exc).removeprefix(f'{path}: ')})") from None
    from .predictor import _sample_rate

    return predictor._array(audio, "waveform", _sample_rate(sample_rate, predictor.sample_rate))


def _raw(predictor, features: np.ndarray) -> np.ndarray:
    """Undo the normalization: the C export normalizes raw frames itself."""
    if predictor._mean is None:
        return features
    mean = np.asarray(predictor._mean, np.float32).reshape(-1)
    return features * np.asarray(predictor._std, np.float32).reshape(-1) + mean


def _onnx_session(predictor, engine_file):
    from .deploy.onnx_graph import _describe_rnn, _onnxruntime, _session, build_graphs

    onnxruntime = _onnxruntime()
    if engine_file is not None:
        if not Path(engine_file).is_file():
            raise ValueError(f"{engine_file}: no such file")
        try:
            session = _session(onnxruntime, Path(engine_file))
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ValueError(f"{engine_file}: not a readable ONNX model ({reason})") from None
        names = [i.name for i in session.get_inputs()]
        if names != ["frame", "state"]:
            raise ValueError(f"{engine_file} is not a step graph (inputs {names}, expected frame, state): give the "
                             "<model>.step.onnx that strrnn export --onnx writes")
        return session
    spec = _describe_rnn(predictor.model, predictor.features.shape, predictor.labels)
    if spec is None:
        raise ValueError("the onnx engine needs a recurrent model (keyword_spotter, har)")
    step = build_graphs(spec)[1]
    return onnxruntime.InferenceSession(step.SerializeToString(), providers=["CPUExecutionProvider"])


def _c_checker(predictor, engine_file, window: int, folder: Path):
    """The C checker to run: ``engine_file``, or the run's C written and compiled in ``folder``."""
    from .deploy import compile_c, write_c

    if engine_file is None:
        norm = None if predictor._mean is None else {"mean": np.asarray(predictor._mean).reshape(-1).tolist(),
                                                       "std": np.asarray(predictor._std).reshape(-1).tolist()}
        write_c(predictor.model.cpu(), folder, input_shape=(window, predictor.features.num_features),
                normalization=norm, class_names=predictor.labels)
        engine_file = compile_c(folder, flags=("-std=c99", "-O2"))
    info = subprocess.run([str(engine_file), "--info"], capture_output=True, text=True)
    fields = info.stdout.split()
    if info.returncode != 0 or len(fields) != 4:
        raise ValueError(f"{engine_file} is not a checker built from strrnn export --c (its --info failed)")
    frames, features = int(fields[0]), int(fields[1])
    if (frames, features) != (window, predictor.features.num_features):
        raise ValueError(f"{engine_file} reads clips of {frames} x {features} features; the window is {window} x "
                         f"{predictor.features.num_features} (the C engine needs --window equal to its FRAMES)")
    return engine_file
