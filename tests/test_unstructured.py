import pytest
import torch
from torch import nn

import strrnn
from strrnn.unstructured_str import UnstructuredSTR


def test_forward_is_soft_threshold_of_weight():
    conv = nn.Conv2d(3, 4, 3)
    strrnn.unstructured(conv, s_init=-1.0)
    W = conv.parametrizations.weight.original
    alpha = torch.sigmoid(torch.tensor(-1.0))
    expected = torch.sign(W) * torch.clamp(W.abs() - alpha, min=0)
    assert torch.allclose(conv.weight, expected)


def test_registration_reproduces_dense_weight_exactly():
    torch.manual_seed(0)
    lin = nn.Linear(30, 20)
    x = torch.randn(5, 30)
    y0 = lin(x)
    strrnn.unstructured(lin, s_init=-5.0)
    assert torch.allclose(lin(x), y0, atol=1e-6)


def test_gradcheck_to_weight_and_threshold():
    p = UnstructuredSTR((3, 4), s_init=-1.0).double()
    W = (torch.randn(3, 4, dtype=torch.float64) * 2).requires_grad_()
    assert torch.autograd.gradcheck(p, (W,))
    out = p(W).sum()
    (grad_s,) = torch.autograd.grad(out, p.threshold.s)
    eps = 1e-6
    with torch.no_grad():
        p.threshold.s += eps
        up = p(W).sum()
        p.threshold.s -= 2 * eps
        down = p(W).sum()
    assert grad_s.item() == pytest.approx(((up - down) / (2 * eps)).item(), rel=1e-5)


def test_per_row_thresholds():
    p = UnstructuredSTR((4, 3, 2, 2), per_row=True)
    assert p.threshold.s.shape == (4, 1, 1, 1)
    with torch.no_grad():
        p.threshold.s.copy_(torch.tensor([-20.0, -20.0, 20.0, 20.0]).view(4, 1, 1, 1))
    out = p(torch.full((4, 3, 2, 2), 0.9))
    assert torch.all(out[:2] > 0.89) and torch.all(out[2:] == 0)


def test_threshold_decay_alone_raises_sparsity_monotonically():
    torch.manual_seed(1)
    lin = nn.Linear(50, 50)
    strrnn.unstructured(lin, s_init=-6.0)
    s = lin.parametrizations.weight[0].threshold.s
    opt = torch.optim.SGD([s], lr=1.0, weight_decay=0.05)
    sparsities = [strrnn.sparsity(lin)]
    for _ in range(60):
        opt.zero_grad()
        s.grad = torch.zeros_like(s)
        opt.step()
        sparsities.append(strrnn.sparsity(lin))
    assert sparsities[0] < 0.01
    assert all(b >= a for a, b in zip(sparsities, sparsities[1:]))
    assert sparsities[-1] > 0.5


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv1d(4, 4, 1)
        self.fc = nn.Linear(4, 2)


def test_sparsify_covers_conv_and_linear_not_norms_or_biases():
    net = _Net()
    strrnn.sparsify(net)
    table = strrnn.report(net)
    assert list(table["module"][:-1]) == ["conv1", "conv2", "fc"]
    assert (table["mode"][:-1] == "unstructured").all()
    from torch.nn.utils import parametrize
    assert not parametrize.is_parametrized(net.bn)
    assert not parametrize.is_parametrized(net.fc, "bias")


def test_sparsify_include_exclude_and_errors():
    net = _Net()
    strrnn.sparsify(net, exclude=["conv1", "fc"])
    assert list(strrnn.report(net)["module"][:-1]) == ["conv2"]
    net = _Net()
    strrnn.sparsify(net, include=lambda path, m: isinstance(m, nn.Linear))
    assert list(strrnn.report(net)["module"][:-1]) == ["fc"]
    with pytest.raises(ValueError, match="matched no layer.*conv1, conv2, fc"):
        strrnn.sparsify(_Net(), include=["nothing*"])
    with pytest.raises(ValueError, match="no tensor named 'kernel'"):
        strrnn.unstructured(nn.Linear(2, 2), "kernel")
    with pytest.raises(ValueError, match="unknown threshold function g='relu'"):
        strrnn.unstructured(nn.Linear(2, 2), g="relu")
