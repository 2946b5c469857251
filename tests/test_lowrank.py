import pickle

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import parametrize

import strrnn
from strrnn.low_rank import LowRankLinear, LowRankSTR


def _originals(module, name="weight"):
    plist = module.parametrizations[name]
    return plist.original0, plist.original1, plist.original2


@pytest.mark.parametrize("factors", ["free", "orthogonal"])
def test_forward_equals_independent_product(factors):
    torch.manual_seed(0)
    lin = nn.Linear(7, 12)
    strrnn.lowrank(lin, factors=factors, s_init=-1.0, min_rank=0)
    A, m, B = _originals(lin)
    with torch.no_grad():
        m.copy_(torch.linspace(-1.0, 1.5, m.numel()))
    alpha = torch.exp(torch.tensor(-1.0))
    spec = torch.sign(m) * torch.clamp(m.abs() - alpha, min=0)
    if factors == "orthogonal":
        qa, ra = torch.linalg.qr(A)
        qa = qa * torch.sign(torch.diagonal(ra))
        qb, rb = torch.linalg.qr(B.T)
        qb = qb * torch.sign(torch.diagonal(rb))
        A_, B_ = qa, qb.T
    else:
        A_, B_ = A, B
    expected = A_ @ torch.diag(spec) @ B_
    assert torch.allclose(lin.weight, expected, atol=1e-6)
    assert strrnn.rank(lin) == int((m.abs() > alpha).sum())


@settings(max_examples=15, deadline=None)
@given(out=st.integers(1, 24), inp=st.integers(1, 24), factors=st.sampled_from(["free", "orthogonal"]),
       seed=st.integers(0, 1000))
def test_right_inverse_reproduces_dense_weight(out, inp, factors, seed):
    torch.manual_seed(seed)
    W = torch.randn(out, inp)
    lin = nn.Linear(inp, out, bias=False)
    with torch.no_grad():
        lin.weight.copy_(W)
    strrnn.lowrank(lin, factors=factors)
    assert torch.allclose(lin.weight, W, atol=1e-5)


@pytest.mark.parametrize("shape", [(40, 10), (10, 40)])
def test_orthogonal_factors_stay_orthonormal_and_spectrum_is_singular_values(shape):
    torch.manual_seed(1)
    lin = nn.Linear(shape[1], shape[0])
    strrnn.lowrank(lin, factors="orthogonal", s_init=-2.0)
    opt = torch.optim.Adam(lin.parameters(), lr=1e-2)
    x, y = torch.randn(64, shape[1]), torch.randn(64, shape[0])
    for _ in range(100):
        opt.zero_grad()
        nn.functional.mse_loss(lin(x), y).backward()
        opt.step()
    left, spec, right = strrnn.low_rank_factors(lin)
    eye = torch.eye(left.shape[1])
    assert torch.linalg.norm(left.T @ left - eye) < 1e-4
    assert torch.linalg.norm(right @ right.T - eye) < 1e-4
    sv = torch.linalg.svdvals(lin.weight.detach())
    expected = torch.sort(spec.detach().abs(), descending=True).values
    assert torch.allclose(sv, expected, atol=1e-4)


@pytest.mark.parametrize("factors", ["free", "orthogonal"])
def test_gradcheck_through_parametrization(factors):
    torch.manual_seed(2)
    p = LowRankSTR((5, 4), factors=factors, s_init=-1.0, min_rank=0).double()
    A = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    m = torch.tensor([1.3, -0.9, 0.8, 2.0], dtype=torch.float64, requires_grad=True)
    B = torch.randn(4, 4, dtype=torch.float64, requires_grad=True)
    s = p.threshold.s

    assert torch.autograd.gradcheck(lambda A, m, B: p(A, m, B), (A, m, B))
    # gradient to s: compare autograd with a central difference
    out = p(A, m, B).sum()
    (grad_s,) = torch.autograd.grad(out, s)
    eps = 1e-6
    with torch.no_grad():
        s += eps
        up = p(A, m, B).sum()
        s -= 2 * eps
        down = p(A, m, B).sum()
        s += eps
    assert grad_s.item() == pytest.approx(((up - down) / (2 * eps)).item(), rel=1e-5, abs=1e-8)


def test_threshold_decay_alone_lowers_rank_monotonically_down_to_min_rank():
    torch.manual_seed(3)
    lin = nn.Linear(16, 16)
    strrnn.lowrank(lin, s_init=-6.0, min_rank=2)
    with torch.no_grad():
        lin.parametrizations.weight.original1.copy_(torch.linspace(0.05, 1.0, 16))
    s = lin.parametrizations.weight[0].threshold.s
    opt = torch.optim.SGD([s], lr=1.0, weight_decay=0.05)
    ranks, alphas = [strrnn.rank(lin)], []
    for _ in range(150):
        opt.zero_grad()
        s.grad = torch.zeros_like(s)  # zero task gradient: only the decay acts
        opt.step()
        ranks.append(strrnn.rank(lin))
        alphas.append(lin.parametrizations.weight[0].threshold().item())
    assert ranks[0] == 16
    assert all(b <= a for a, b in zip(ranks, ranks[1:]))
    assert all(b > a for a, b in zip(alphas, alphas[1:]))
    assert ranks[-1] == 2  # alpha -> e^0 = 1 would cut everything; min_rank holds
    assert strrnn.rank(lin) >= 2
    assert torch.linalg.matrix_rank(lin.weight.detach()).item() == 2


def test_fixed_rank_has_no_threshold_and_frozen_spectrum():
    lin = nn.Linear(10, 8)
    strrnn.lowrank(lin, max_rank=3, threshold=False)
    plist = lin.parametrizations.weight
    assert not plist.original1.requires_grad
    assert torch.linalg.matrix_rank(lin.weight.detach()).item() == 3
    groups = {g["name"]: g for g in strrnn.param_groups(lin, 1e-3)}
    assert "threshold" not in groups and "spectrum" not in groups
    assert strrnn.report(lin).loc[0, "mode"] == "fixed-rank"


def test_state_dict_round_trip_gives_identical_outputs():
    torch.manual_seed(4)
    a = nn.Sequential(nn.Linear(6, 9), nn.Tanh(), nn.Linear(9, 3))
    strrnn.lowrank(a[0], s_init=-1.0)
    with torch.no_grad():
        a[0].parametrizations.weight.original1.uniform_(0, 1)
    sd = a.state_dict()
    assert "0.parametrizations.weight.original0" in sd and "0.parametrizations.weight.0.threshold.s" in sd
    b = nn.Sequential(nn.Linear(6, 9), nn.Tanh(), nn.Linear(9, 3))
    strrnn.lowrank(b[0])
    b.load_state_dict(sd)
    x = torch.randn(4, 6)
    assert torch.equal(a(x), b(x))
    assert strrnn.rank(a[0]) == strrnn.rank(b[0])


def test_torch_save_of_parametrized_model_is_refused_but_state_dict_works(tmp_path):
    lin = nn.Linear(4, 4)
    strrnn.lowrank(lin)
    with pytest.raises(RuntimeError, match="state_dict"):
        torch.save(lin, tmp_path / "model.pt")
    with pytest.raises(RuntimeError):
        pickle.dumps(lin)
    torch.save(lin.state_dict(), tmp_path / "sd.pt")
    loaded = torch.load(tmp_path / "sd.pt", weights_only=True)
    assert set(loaded) == set(lin.state_dict())


def test_conv_weight_needs_flatten_and_then_factors():
    conv = nn.Conv2d(4, 6, 3)
    with pytest.raises(ValueError, match=r"shape \(6, 4, 3, 3\).*flatten=True"):
        strrnn.lowrank(conv)
    x = torch.randn(2, 4, 8, 8)
    y0 = conv(x)
    strrnn.lowrank(conv, flatten=True)
    assert conv.weight.shape == (6, 4, 3, 3)
    assert torch.allclose(conv(x), y0, atol=1e-5)
    assert conv.parametrizations.weight.original0.shape == (6, 6)


@pytest.mark.parametrize(
    "kwargs, pattern",
    [({"max_rank": 0}, "max_rank=0"), ({"max_rank": 9}, "max_rank=9"), ({"factors": "svd"}, "factors='svd'"),
     ({"min_rank": 5, "max_rank": 3}, "min_rank=5"), ({"g": "nope"}, "g='nope'")],
)
def test_bad_options_are_named(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        strrnn.lowrank(nn.Linear(8, 5), **kwargs)


def test_bad_targets_are_named():
    with pytest.raises(ValueError, match="no tensor named 'W'"):
        strrnn.lowrank(nn.Linear(3, 3), "W")
    with pytest.raises(ValueError, match=r"shape \(5,\)"):
        strrnn.lowrank(nn.LayerNorm(5))
    lin = nn.Linear(3, 3)
    strrnn.lowrank(lin)
    with pytest.raises(ValueError, match="already carries"):
        strrnn.lowrank(lin)
    with pytest.raises(ValueError, match="carries no LowRankSTR"):
        strrnn.rank(nn.Linear(3, 3))


class _ToyCell(nn.Module):
    recurrent_weights = ("W", "U")

    def __init__(self):
        super().__init__()
        self.W = nn.Parameter(torch.randn(20, 8))
        self.U = nn.Parameter(torch.randn(20, 20))


def test_lowrank_rnn_applies_per_weight_options():
    model = nn.Sequential(_ToyCell(), nn.Linear(20, 2))
    strrnn.lowrank_rnn(model, max_rank={"W": 4, "U": 10}, s_init=-9.0)
    assert parametrize.is_parametrized(model[0], "W") and parametrize.is_parametrized(model[0], "U")
    assert not parametrize.is_parametrized(model[1])
    assert model[0].parametrizations.W.original0.shape == (20, 4)
    assert model[0].parametrizations.U.original0.shape == (20, 10)
    with pytest.raises(ValueError, match="no recurrent cell"):
        strrnn.lowrank_rnn(nn.Linear(3, 3))
    with pytest.raises(ValueError, match=r"\['V'\].*available: \['U', 'W'\]"):
        strrnn.lowrank_rnn(nn.Sequential(_ToyCell()), weights=("V",))


def test_low_rank_linear_counts_and_computes():
    layer = LowRankLinear(10, 6, 2)
    assert sum(p.numel() for p in layer.parameters()) == 2 * 16 + 6
    x = torch.randn(3, 10)
    assert torch.allclose(layer(x), x @ layer.weight.T + layer.bias, atol=1e-6)


def test_parameters_follow_weight_dtype():
    lin = nn.Linear(5, 5).double()
    strrnn.lowrank(lin)
    assert lin.parametrizations.weight[0].threshold.s.dtype == torch.float64
    assert lin.weight.dtype == torch.float64


def test_freeze_rank_holds_whatever_the_threshold_does_and_is_checkpointed():
    torch.manual_seed(5)
    lin = nn.Linear(12, 12)
    strrnn.lowrank(lin, s_init=-8.0)
    p = lin.parametrizations.weight[0]
    with torch.no_grad():
        lin.parametrizations.weight.original1.copy_(torch.linspace(0.1, 1.2, 12))
    p.freeze_rank(5)
    assert strrnn.rank(lin) == 5
    with torch.no_grad():
        p.threshold.s.fill_(3.0)  # would cut everything
    assert strrnn.rank(lin) == 5
    # the gradient to s vanishes once the rank is frozen
    lin.weight.sum().backward()
    assert p.threshold.s.grad.abs().item() == 0.0
    # frozen at full rank, s still reaches the graph (DistributedDataParallel needs a gradient for every parameter)
    p.threshold.s.grad = None
    p.freeze_rank(12)
    lin.weight.sum().backward()
    assert strrnn.rank(lin) == 12 and p.threshold.s.grad is not None and p.threshold.s.grad.item() == 0.0
    p.freeze_rank(5)
    fresh = nn.Linear(12, 12)
    strrnn.lowrank(fresh)
    fresh.load_state_dict(lin.state_dict())
    assert strrnn.rank(fresh) == 5 and fresh.parametrizations.weight[0].rank_limits.tolist() == [5, 5]
    with pytest.raises(ValueError, match=r"\(6, 4\)"):
        p.set_rank_limits(6, 4)


def test_min_rank_holds_when_spectrum_entries_tie():
    # free factors start with every spectrum entry equal; a huge threshold must still leave min_rank alive
    lin = nn.Linear(6, 6)
    strrnn.lowrank(lin, min_rank=2)
    with torch.no_grad():
        lin.parametrizations.weight[0].threshold.s.fill_(5.0)
    assert strrnn.rank(lin) >= 2
    lin.weight.sum().backward()
    assert lin.parametrizations.weight.original1.grad.abs().sum() > 0  # protected entries still learn


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("factors", ["free", "orthogonal"])
def test_half_precision_weights_are_factored_in_float32_and_cast_back(dtype, factors):
    layer = nn.Linear(8, 6).to(dtype)
    before = layer.weight.detach().float().clone()
    strrnn.lowrank(layer, "weight", factors=factors)
    assert layer.weight.dtype == dtype
    assert all(p.dtype == dtype for p in layer.parameters())
    tolerance = 1e-2 if dtype == torch.bfloat16 else 2e-3
    assert torch.allclose(layer.weight.float(), before, atol=tolerance)
    layer(torch.randn(3, 8, dtype=dtype)).float().sum().backward()


@pytest.mark.parametrize("first, second", [("unstructured", "lowrank"), ("lowrank", "unstructured"),
                                           ("lowrank", "lowrank")])
def test_str_parametrizations_do_not_stack(first, second):
    layer = nn.Linear(8, 6)
    getattr(strrnn, first)(layer, "weight")
    with pytest.raises(ValueError, match=r"Linear.weight already carries .*STR; one tensor takes one STR"):
        getattr(strrnn, second)(layer, "weight")


def test_lowrank_refuses_to_stack_on_another_parametrization():
    from torch.nn.utils import parametrize

    class Double(nn.Module):
        def forward(self, x):
            return 2 * x

    layer = nn.Linear(8, 6)
    parametrize.register_parametrization(layer, "weight", Double())
    with pytest.raises(ValueError, match="already carries Double; LowRankSTR .* must be its only"):
        strrnn.lowrank(layer, "weight")


@pytest.mark.parametrize("factors", ["free", "orthogonal"])
def test_release_refactors_in_place_without_changing_the_weight(factors):
    torch.manual_seed(0)
    layer = nn.Linear(12, 10)
    strrnn.lowrank(layer, "weight", factors=factors)
    p = layer.parametrizations.weight[0]
    with torch.no_grad():
        layer.parametrizations.weight.original1.copy_(torch.linspace(2.0, 0.1, 10))
    p.threshold.set_alpha(0.9)
    before, rank = layer.weight.detach().clone(), strrnn.rank(layer)
    A, m, B = (layer.parametrizations.weight.original0, layer.parametrizations.weight.original1,
               layer.parametrizations.weight.original2)
    ids = [id(t) for t in (A, m, B)]
    assert p.release(A, m, B) == rank
    assert [id(t) for t in (A, m, B)] == ids  # same Parameters: an optimizer keeps working
    assert torch.allclose(layer.weight, before, atol=1e-5)
    assert p.is_released and strrnn.rank(layer) == rank and p.min_rank == p.rank_cap == rank
    layer.weight.sum().backward()
    assert not m.grad.any() and not p.threshold.s.grad.any()  # the spectrum and threshold no longer act
    restored = nn.Linear(12, 10)
    strrnn.lowrank(restored, "weight", factors=factors)
    restored.load_state_dict(layer.state_dict())
    assert restored.parametrizations.weight[0].is_released
    assert torch.allclose(restored.weight, layer.weight)


def test_checkpoints_from_before_release_existed_still_load():
    layer = nn.Linear(6, 5)
    strrnn.lowrank(layer, "weight")
    state = {k: v for k, v in layer.state_dict().items() if "release" not in k}
    fresh = nn.Linear(6, 5)
    strrnn.lowrank(fresh, "weight")
    fresh.load_state_dict(state)
    assert not fresh.parametrizations.weight[0].is_released


def test_set_alpha_inverts_exp_and_sigmoid():
    t = strrnn.Threshold(g="exp", k=2.0)
    t.set_alpha(0.5)
    assert float(t().detach()) == pytest.approx(0.5)
    t = strrnn.Threshold(g="sigmoid")
    t.set_alpha(0.25)
    assert float(t().detach()) == pytest.approx(0.25)
    t = strrnn.Threshold(g=lambda s, k: s.abs())
    with pytest.raises(ValueError, match="inverse"):
        t.set_alpha(0.1)


def test_retracted_orthogonal_factors_stay_orthonormal_after_optimizer_steps():
    torch.manual_seed(0)
    layer = nn.Linear(7, 9)
    strrnn.lowrank(layer, factors="orthogonal", retract=True)
    opt = torch.optim.Adam(layer.parameters(), lr=0.05)
    x = torch.randn(16, 7)
    for _ in range(5):
        opt.zero_grad()
        layer(x).pow(2).sum().backward()
        opt.step()
    W = layer.weight.detach()  # the forward retracts the factors the step moved
    A, m, B = (t.detach() for t in strrnn.factored.originals(layer, "weight"))
    assert torch.allclose(A.T @ A, torch.eye(7), atol=1e-5) and torch.allclose(B @ B.T, torch.eye(7), atol=1e-5)
    p = layer.parametrizations.weight[0]
    singular = torch.linalg.svdvals(W)
    assert torch.allclose(torch.sort(p.thresholded(m).abs(), descending=True).values, singular, atol=1e-5)
