import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

import strrnn
from strrnn.low_rank import LowRankLinear


def _set_spectrum(layer, values, s):
    plist = layer.parametrizations.weight
    with torch.no_grad():
        plist.original1.copy_(torch.tensor(values))
        plist[0].threshold.s.fill_(s)


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 6), nn.ReLU(), nn.Conv1d(6, 4, 1))


def test_report_values_against_hand_computation():
    model = _model()
    strrnn.lowrank(model[0], min_rank=0)  # (8, 10): r = 8
    _set_spectrum(model[0], [2.0, 1.5, 1.2, 0.5, 0.3, -2.0, 0.1, 0.05], s=0.0)  # alpha = 1 -> 4 survive
    strrnn.unstructured(model[2], s_init=0.0)  # alpha = 0.5
    with torch.no_grad():
        w = model[2].parametrizations.weight.original
        w.copy_(torch.linspace(-1, 1, w.numel()).view_as(w))
    table = strrnn.report(model)
    low = table.iloc[0]
    assert (low["module"], low["tensor"], low["mode"], low["shape"]) == ("0", "weight", "lowrank", "8x10")
    assert low["rank"] == 4 and low["max_rank"] == 8
    assert low["threshold"] == pytest.approx(1.0)
    assert low["params_dense"] == 80 and low["params"] == 4 * 18 == 72
    dense_w = torch.linspace(-1, 1, 48)
    zeros = int((dense_w.abs() <= 0.5).sum())
    un = table.iloc[1]
    assert un["mode"] == "unstructured" and un["shape"] == "6x8"
    assert un["sparsity"] == pytest.approx(100.0 * zeros / 48)
    assert un["params"] == 48 - zeros and un["threshold"] == pytest.approx(0.5)
    total = table.iloc[-1]
    assert total["module"] == "total"
    assert total["params_dense"] == 128 and total["params"] == 72 + 48 - zeros
    assert len(table) == 3


def test_report_counts_dense_when_factors_are_larger():
    lin = nn.Linear(32, 100)
    strrnn.lowrank(lin)
    row = strrnn.report(lin).iloc[0]
    assert row["rank"] == 32 and row["params"] == 3200  # 32*(132) > 3200: stays dense


def test_report_empty_for_plain_model():
    assert strrnn.report(nn.Linear(3, 3)).empty


def test_export_matches_trained_model_and_has_no_parametrization(tmp_path):
    model = _model()
    strrnn.lowrank(model[0], min_rank=0)
    _set_spectrum(model[0], [2.0, 1.5, 1.2, 0.5, 0.3, -2.0, 0.1, 0.05], s=0.0)
    strrnn.lowrank(model[2], factors="orthogonal", s_init=-1.0)
    strrnn.unstructured(model[4], "weight", s_init=-2.0)
    with torch.no_grad():
        model[4].parametrizations.weight[0].threshold.s.fill_(-1.0)  # alpha 0.27 cuts some weights
    x = torch.randn(5, 10)

    def run(m):
        h = m[3](m[2](m[1](m[0](x))))
        return m[4](h.unsqueeze(-1)).squeeze(-1)

    expected = run(model)
    small = strrnn.export(model)
    assert not strrnn.has_str(small)
    assert not any(parametrize.is_parametrized(m) for m in small.modules())
    assert strrnn.has_str(model)  # the original is untouched
    assert isinstance(small[0], LowRankLinear) and small[0].rank == 4
    assert sum(p.numel() for p in small[0].parameters()) == 4 * 18 + 8
    assert torch.allclose(run(small), expected, atol=1e-5)
    # exact zeros in the unstructured layer, matching the report
    row = strrnn.report(model).iloc[2]
    zeros = int((small[4].weight == 0).sum())
    assert zeros == row["params_dense"] - row["params"] and zeros > 0
    # round trip through a state dict with weights_only=True
    torch.save(small.state_dict(), tmp_path / "small.pt")
    fresh = strrnn.export(model)
    for p in fresh.parameters():
        nn.init.zeros_(p)
    fresh.load_state_dict(torch.load(tmp_path / "small.pt", weights_only=True))
    assert torch.allclose(run(fresh), expected, atol=1e-5)


class _FactorCell(nn.Module):
    recurrent_weights = ("W",)

    def __init__(self):
        super().__init__()
        self.W = nn.Parameter(torch.randn(12, 30))

    def weight_value(self):
        if hasattr(self, "W_left"):
            return self.W_left @ self.W_right
        return self.W

    def export_low_rank(self, name, left, right):
        delattr(self, name)
        self.register_parameter(f"{name}_left", nn.Parameter(left.clone()))
        self.register_parameter(f"{name}_right", nn.Parameter(right.clone()))


def test_export_uses_module_factor_protocol():
    cell = _FactorCell()
    strrnn.lowrank(cell, "W", min_rank=0)
    _set_spectrum_named(cell, "W", torch.cat([torch.ones(3), torch.zeros(9)]), s=-3.0)
    expected = cell.W.detach().clone()
    small = strrnn.export(cell)
    assert small.W_left.shape == (12, 3) and small.W_right.shape == (3, 30)
    assert torch.allclose(small.weight_value(), expected, atol=1e-5)


def _set_spectrum_named(module, name, values, s):
    plist = module.parametrizations[name]
    with torch.no_grad():
        plist.original1.copy_(values)
        plist[0].threshold.s.fill_(s)


def test_export_of_a_bare_linear_returns_factored_layer():
    lin = nn.Linear(20, 20)
    strrnn.lowrank(lin, max_rank=3)
    x = torch.randn(2, 20)
    out = strrnn.export(lin)
    assert isinstance(out, LowRankLinear)
    assert torch.allclose(out(x), lin(x), atol=1e-5)


def test_export_under_no_grad_keeps_weights_as_parameters():
    model = _model()
    strrnn.lowrank(model[0], max_rank=8)
    strrnn.unstructured(model[2])
    with torch.no_grad():
        small = strrnn.export(model)
    assert not list(small.buffers())
    assert {n for n, _ in small.named_parameters()} >= {"2.weight", "4.weight"}
    assert isinstance(small[0], nn.Linear) and isinstance(small[0].weight, nn.Parameter)
