"""Small models shared by the tests (imported explicitly, e.g. ``from tiny_nets import TinyNet, tiny_dataset``): a
tiny one-step 'RNN' and its data for the Lightning tests, and random exported keyword spotters for the export tests."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import TensorDataset


class TinyCell(nn.Module):
    """The two recurrent weights a cell exposes to STR: W (16, 8) and U (16, 16)."""

    recurrent_weights = ("W", "U")

    def __init__(self):
        super().__init__()
        self.W = nn.Parameter(0.3 * torch.randn(16, 8))
        self.U = nn.Parameter(0.3 * torch.randn(16, 16))


class TinyNet(nn.Module):
    """h = tanh(W x + U tanh(W x)); logits = head(h): x (B, 8) -> (B, 3). With ``nan_after`` the output turns NaN
    after that many calls (a diverging run)."""

    def __init__(self, nan_after: int | None = None):
        super().__init__()
        self.cell = TinyCell()
        self.head = nn.Linear(16, 3)
        self.calls = 0
        self.nan_after = nan_after

    def forward(self, x):
        self.calls += 1
        h0 = torch.tanh(x @ self.cell.W.T)
        h = torch.tanh(x @ self.cell.W.T + h0 @ self.cell.U.T)
        out = self.head(h)
        if self.nan_after is not None and self.calls > self.nan_after:
            out = out * float("nan")
        return out


def tiny_dataset(n: int = 96) -> TensorDataset:
    """``n`` seeded examples x (n, 8) with three classes from the first two features."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 8, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 1).long()
    return TensorDataset(x, y)


def random_spotter(cell: str, lowrank: bool, pooling: str = "last", layers: int = 1, hidden: int = 20,
                   features: int = 32, ranks: tuple[int, int] = (5, 7), seed: int = 0) -> nn.Module:
    """An exported keyword spotter (10 classes) with random weights — biases and gate scalars randomized too, so
    every term counts — and, with ``lowrank``, orthogonal W, U factors at ``ranks``."""
    import strrnn
    from strrnn.models import KeywordSpotter

    torch.manual_seed(seed)
    model = KeywordSpotter(n_features=features, n_classes=10, cell=cell, hidden_size=hidden, num_layers=layers,
                           pooling=pooling)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.normal_(0.0, 0.5)
    if lowrank:
        strrnn.lowrank_rnn(model, factors="orthogonal", max_rank={"W": ranks[0], "U": ranks[1]}, threshold=False)
    return strrnn.export(model).eval()
