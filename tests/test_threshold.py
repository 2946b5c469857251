import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import strrnn
from strrnn.threshold import STR_EPS, STR_LR, Threshold, get_threshold_function, soft_threshold


@settings(max_examples=50, deadline=None)
@given(
    values=st.lists(st.floats(-10, 10, allow_nan=False, width=32), min_size=1, max_size=50),
    alpha=st.floats(0, 5, allow_nan=False, width=32),
)
def test_soft_threshold_matches_definition(values, alpha):
    x = torch.tensor(values, dtype=torch.float64)
    out = soft_threshold(x, alpha)
    expected = [math.copysign(max(abs(v) - alpha, 0.0), v) if abs(v) > alpha else 0.0 for v in values]
    assert torch.allclose(out, torch.tensor(expected, dtype=torch.float64), atol=1e-12)
    # exact zeros below the threshold
    assert torch.all(out[x.abs() <= alpha] == 0)


def test_soft_threshold_gradient_is_zero_below_threshold():
    x = torch.tensor([-2.0, -0.5, 0.1, 0.4, 3.0], requires_grad=True)
    alpha = torch.tensor(0.5, requires_grad=True)
    soft_threshold(x, alpha).sum().backward()
    assert torch.equal(x.grad, torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0]))
    # d/dalpha of sum: -sign(x) over the survivors (-2 and 3): +1 - 1 = 0
    assert alpha.grad.item() == pytest.approx(0.0)


def test_soft_threshold_gradcheck():
    x = torch.tensor([-2.0, -0.7, 0.3, 1.5], dtype=torch.float64, requires_grad=True)
    alpha = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(soft_threshold, (x, alpha))


def test_registry_and_callable():
    s = torch.tensor([-1.0, 0.0, 2.0])
    assert torch.allclose(get_threshold_function("exp")(s, 2.0), 2.0 * torch.exp(s))
    assert torch.allclose(get_threshold_function("sigmoid")(s, 1.0), torch.sigmoid(s))
    strrnn.register_threshold_function("softplus", lambda s, k: k * torch.nn.functional.softplus(s))
    assert "softplus" in strrnn.threshold_functions()
    t = Threshold((), g="softplus", s_init=0.0)
    assert t().item() == pytest.approx(math.log(2.0))
    t = Threshold((3,), g=lambda s, k: k * s.abs(), k=2.0, s_init=-1.5)
    assert torch.allclose(t(), torch.full((3,), 3.0))


def test_unknown_g_lists_registered_names():
    with pytest.raises(ValueError, match=r"unknown threshold function g='tanh'.*exp.*sigmoid"):
        Threshold(g="tanh")


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf")])
def test_bad_k_is_named(bad):
    with pytest.raises(ValueError, match=f"k={bad!r}"):
        Threshold(k=bad)


def test_bad_s_init_is_named():
    with pytest.raises(ValueError, match="s_init=nan"):
        Threshold(s_init=float("nan"))


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 6)
        self.norm = nn.LayerNorm(6)
        self.head = nn.Linear(6, 3)


def test_param_groups_split_spectra_thresholds_weights_and_no_decay():
    net = _Net()
    strrnn.lowrank(net.lin, "weight")
    strrnn.unstructured(net.head, "weight")
    groups = {g["name"]: g for g in strrnn.param_groups(net, weight_decay=1e-3, threshold_decay=5e-3)}
    assert set(groups) == {"weights", "no_decay", "spectrum", "threshold"}
    plist = net.lin.parametrizations.weight
    assert {id(p) for p in groups["spectrum"]["params"]} == {id(plist.original1)}
    assert {id(p) for p in groups["threshold"]["params"]} == {
        id(plist[0].threshold.s), id(net.head.parametrizations.weight[0].threshold.s)
    }
    weight_ids = {id(p) for p in groups["weights"]["params"]}
    assert weight_ids == {id(plist.original0), id(plist.original2), id(net.head.parametrizations.weight.original)}
    no_decay_ids = {id(p) for p in groups["no_decay"]["params"]}
    assert no_decay_ids == {id(net.lin.bias), id(net.head.bias), id(net.norm.weight), id(net.norm.bias)}
    assert groups["weights"]["weight_decay"] == 1e-3
    assert groups["no_decay"]["weight_decay"] == 0.0
    assert groups["spectrum"]["weight_decay"] == 5e-3  # the sparsity knob: spectra decay with thresholds
    assert groups["threshold"]["weight_decay"] == 5e-3
    for name in ("spectrum", "threshold"):
        assert groups[name]["lr"] == STR_LR and groups[name]["eps"] == STR_EPS
    # every trainable parameter lands in exactly one group
    total = sum(len(g["params"]) for g in groups.values())
    assert total == len([p for p in net.parameters() if p.requires_grad])
    # usable by real optimizers
    torch.optim.Adam(list(groups.values()), lr=1e-3)
    torch.optim.SGD(list(groups.values()), lr=0.1, momentum=0.9)


def test_param_groups_coupled_decay_by_default_and_inherit_option():
    net = _Net()
    strrnn.lowrank(net.lin, "weight")
    groups = {g["name"]: g for g in strrnn.param_groups(net, 2e-3, threshold_lr=None, threshold_eps=None)}
    assert groups["threshold"]["weight_decay"] == 2e-3
    assert "lr" not in groups["threshold"] and "eps" not in groups["threshold"]


@pytest.mark.parametrize(
    "kwargs, name",
    [({"weight_decay": -1.0}, "weight_decay=-1.0"), ({"threshold_decay": float("nan")}, "threshold_decay=nan"),
     ({"threshold_lr": 0.0}, "threshold_lr=0.0"), ({"lr": -2.0}, "lr=-2.0")],
)
def test_param_groups_bad_values_are_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        strrnn.param_groups(_Net(), **kwargs)


def test_str_group_under_adam_responds_to_decay_strength():
    """The threshold recipe: with zero task gradient, Adam moves s in proportion to its decay."""
    moved = []
    for decay in (1e-3, 1e-2):
        lin = nn.Linear(10, 10)
        strrnn.lowrank(lin)
        opt = torch.optim.Adam(strrnn.param_groups(lin, weight_decay=decay), lr=1e-3)
        s = lin.parametrizations.weight[0].threshold.s
        for _ in range(20):
            opt.zero_grad()
            (0.0 * s).sum().backward()  # zero task gradient: only the decay acts
            opt.step()
        moved.append(s.item() + 10.0)
    assert moved[0] > 0 and moved[1] > 5 * moved[0]
