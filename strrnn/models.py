"""Sequence classifiers for speech and sensor data; they know nothing about STR.

STR is applied from outside: ``strrnn.lowrank_rnn(model)`` parametrizes the ``W``/``U`` of every
recurrent cell (found through the cells' ``recurrent_weights``), ``strrnn.sparsify(model)`` every
Linear weight. A registry builds models by name::

    model = strrnn.models.build("keyword_spotter", num_classes=12, in_chans=32, cell="fastgrnn")

Shapes: ``B`` batch, ``T`` frames, ``F`` features per frame, ``C`` classes.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import torch
from torch import nn

from .cells import RNN

__all__ = ["MODELS", "SequenceClassifier", "KeywordSpotter", "HARClassifier", "StreamState", "available",
           "build", "register_model"]

#: Model registry: name -> class (or factory). Use :func:`build` / :func:`register_model`.
MODELS: dict[str, type[nn.Module]] = {}

POOLINGS = ("last", "mean")


def register_model(name: str):
    """Class decorator: make a model buildable as ``build(name, **kwargs)``."""

    def deco(cls):
        MODELS[name] = cls
        return cls

    return deco


def available() -> list[str]:
    """Names accepted by :func:`build`."""
    return sorted(MODELS)


def build(name: str, num_classes: int | None = None, in_chans: int | None = None, **kwargs) -> nn.Module:
    """Build a registered model by name, in the vocabulary every strrnn registry shares (timm's):
    ``num_classes`` (C) and ``in_chans`` (the input's channels: features per frame, F) — the same names
    ``cnn.models.build`` takes. Other keyword arguments go to the model (``cell``, ``hidden_size``, ...).

    Raises:
        ValueError: unknown name (the message lists the choices).
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(available())}")
    for old, new, value in (("n_classes", "num_classes", num_classes), ("n_features", "in_chans", in_chans)):
        if old in kwargs:  # the constructors' own names, accepted for older callers of build()
            if value is not None:
                raise ValueError(f"give {new}= or {old}=, not both")
            warnings.warn(f"build(..., {old}=) is deprecated: pass {new}=", FutureWarning, stacklevel=2)
    if num_classes is not None:
        kwargs["n_classes"] = num_classes
    if in_chans is not None:
        kwargs["n_features"] = in_chans
    return MODELS[name](**kwargs)


class StreamState(NamedTuple):
    """Carried state of :meth:`SequenceClassifier.step`: the RNN state, the running output sum (for
    ``pooling="mean"``; (B, H)) and the number of frames seen."""

    rnn: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None
    total: torch.Tensor | None
    frames: int


class SequenceClassifier(nn.Module):
    """RNN encoder + pooling over time + linear classifier.

    Args:
        n_features: F, features per frame.
        n_classes: C.
        cell: a cell name (``"fastgrnn"``, ``"fastrnn"``, ``"lstm"``, ``"gru"``).
        hidden_size, num_layers, bidirectional, dropout: of the :class:`strrnn.cells.RNN`.
        pooling: ``"last"`` (state after the last valid frame) or ``"mean"`` (mean output over the
            valid frames).
        **cell_kwargs: passed to the cell constructor (e.g. ``zeta_init``).

    ``forward(x (B, T, F), lengths=None (B,)) -> logits (B, C)``.
    """

    def __init__(
        self,
        n_features: int,
        n_classes: int,
        cell: str = "fastgrnn",
        hidden_size: int = 100,
        num_layers: int = 1,
        pooling: str = "last",
        bidirectional: bool = False,
        dropout: float = 0.0,
        **cell_kwargs,
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; choose one of: {', '.join(POOLINGS)}")
        if not isinstance(n_classes, int) or n_classes < 1:
            raise ValueError(f"n_classes must be a positive int, got {n_classes!r}")
        self.n_features, self.n_classes, self.pooling = n_features, n_classes, pooling
        self.rnn = RNN(
            cell, n_features, hidden_size, num_layers=num_layers, bidirectional=bidirectional,
            batch_first=True, dropout=dropout, **cell_kwargs,
        )
        self.classifier = nn.Linear(hidden_size * self.rnn.num_directions, n_classes)

    def features(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Pooled sequence embedding: x (B, T, F) -> (B, D*H)."""
        out, h_n = self.rnn(x, lengths=lengths)
        if self.pooling == "mean":
            if lengths is None:
                return out.mean(1)
            # outputs past each length are zero (RNN contract), so the sum needs no mask
            return out.sum(1) / torch.as_tensor(lengths, device=out.device).to(out.dtype).unsqueeze(1)
        h = h_n[0] if isinstance(h_n, tuple) else h_n
        D = self.rnn.num_directions
        # last layer's final state(s); for the backward direction that is the state after frame 0
        return h[-1] if D == 1 else torch.cat([h[-2], h[-1]], dim=-1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, F), lengths (B,) or None -> logits (B, C)."""
        return self.classifier(self.features(x, lengths))

    def step(self, x_t: torch.Tensor, state: StreamState | None = None) -> tuple[torch.Tensor, StreamState]:
        """Streaming inference, one frame at a time: x_t (B, F) -> (logits (B, C), new state).

        The logits after frame t equal ``forward`` on the first t+1 frames (unidirectional models).
        """
        if state is None:
            state = StreamState(None, None, 0)
        out, rnn_state = self.rnn.step(x_t, state.rnn)
        total = None
        if self.pooling == "mean":
            total = out if state.total is None else state.total + out
            out = total / (state.frames + 1)
        return self.classifier(out), StreamState(rnn_state, total, state.frames + 1)


@register_model("keyword_spotter")
class KeywordSpotter(SequenceClassifier):
    """Keyword spotter over log-mel frames (the FastGRNN/STR setting: 99 x 32 features, hidden 100).

    ``KeywordSpotter(n_features=32, n_classes=12, cell="fastgrnn", hidden_size=100, num_layers=1,
    pooling="last")``; x (B, T, 32) -> logits (B, n_classes).
    """

    def __init__(
        self,
        n_features: int = 32,
        n_classes: int = 12,
        cell: str = "fastgrnn",
        hidden_size: int = 100,
        num_layers: int = 1,
        pooling: str = "last",
        **kwargs,
    ) -> None:
        super().__init__(n_features, n_classes, cell, hidden_size, num_layers, pooling, **kwargs)


@register_model("har")
class HARClassifier(SequenceClassifier):
    """Human-activity classifier over inertial sensor windows (UCI HAR: 128 steps x 9 channels).

    Defaults follow the FastGRNN/STR HAR-2 setting: FastGRNN, hidden 80, 2 classes.
    x (B, 128, 9) -> logits (B, n_classes).
    """

    def __init__(
        self,
        n_features: int = 9,
        n_classes: int = 2,
        cell: str = "fastgrnn",
        hidden_size: int = 80,
        num_layers: int = 1,
        pooling: str = "last",
        **kwargs,
    ) -> None:
        super().__init__(n_features, n_classes, cell, hidden_size, num_layers, pooling, **kwargs)
