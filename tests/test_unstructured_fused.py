"""The fused soft threshold (one autograd node) against the plain formula it replaces: bit for bit.

``strrnn.threshold.soft_threshold_fused`` must give the values and gradients of
``soft_threshold(x, α) = sign(x)·relu(|x| − α)`` with autograd's chain exactly — not to a tolerance — for every
threshold function the engine registers, per-tensor and per-row thresholds, ties ``|x| = α`` and exact zeros;
and keep STR's gradient semantics: ``∂y/∂x = [|x| > α]``, ``∂y/∂s = −sign(x)·g'(s)`` on kept entries.
"""

import pytest
import torch
from torch import nn

import strrnn
from strrnn import threshold as engine
from strrnn.threshold import get_threshold_function, soft_threshold, soft_threshold_fused, threshold_functions
from strrnn.unstructured_str import UnstructuredSTR


def _softplus_g(s: torch.Tensor, k: float) -> torch.Tensor:
    return k * nn.functional.softplus(s)


G_FUNCTIONS = [*threshold_functions(), _softplus_g]
SHAPES = {"per-tensor": (), "per-row": (6, 1, 1, 1)}


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The IEEE bit patterns of ``t`` (so that -0.0 and +0.0 differ)."""
    return t.view({torch.float64: torch.int64, torch.float32: torch.int32}[t.dtype])


def _assert_bit_identical(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    assert a.shape == b.shape and a.dtype == b.dtype, what
    differ = _bits(a) != _bits(b)
    assert not differ.any(), f"{what}: {int(differ.sum())} entries differ, e.g. {a[differ][:3]} vs {b[differ][:3]}"


def _case(g, s_shape, dtype, seed=0):
    """Weights ``(6, 4, 3, 3)`` with ties ``±α`` and zeros planted, thresholds ``s``, and an upstream gradient."""
    gen = torch.Generator().manual_seed(seed)
    s = torch.full(s_shape, -1.5, dtype=dtype) + 0.3 * torch.randn(s_shape, dtype=dtype, generator=gen)
    alpha = get_threshold_function(g)(s, 0.7).expand(6, 1, 1, 1).reshape(6)
    w = 0.4 * torch.randn(6, 4, 3, 3, dtype=dtype, generator=gen)
    rows = w.view(6, -1)
    rows[:, 0], rows[:, 1], rows[:, 2] = alpha, -alpha, 0.0  # ties at the threshold (pruned) and exact zeros
    rows[:, 3] = torch.nextafter(alpha, torch.full_like(alpha, 1.0))  # the smallest kept magnitude
    upstream = torch.randn(w.shape, dtype=dtype, generator=gen)
    return w, s, upstream


def _run(fn, g, w0, s0, upstream):
    w, s = w0.clone().requires_grad_(), s0.clone().requires_grad_()
    y = fn(w, get_threshold_function(g)(s, 0.7))
    assert (y.grad_fn.name() == "_FusedSoftThresholdBackward") == (fn is soft_threshold_fused)  # no silent fallback
    y.backward(upstream)
    return y.detach(), w.grad, s.grad


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("where", SHAPES)
@pytest.mark.parametrize("g", G_FUNCTIONS, ids=lambda g: g if isinstance(g, str) else g.__name__)
def test_fused_is_bit_identical_to_the_plain_formula(g, where, dtype):
    w, s, upstream = _case(g, SHAPES[where], dtype)
    plain = _run(soft_threshold, g, w, s, upstream)
    fused = _run(soft_threshold_fused, g, w, s, upstream)
    for a, b, what in zip(plain, fused, ("forward", "grad w", "grad s"), strict=True):
        _assert_bit_identical(a, b, what)
    pruned = w.abs() <= get_threshold_function(g)(s, 0.7)
    assert pruned.view(6, -1)[:, :3].all() and not pruned.view(6, -1)[:, 3].any()
    assert (fused[0][pruned] == 0).all() and (fused[1][pruned] == 0).all()


@pytest.mark.parametrize("where", SHAPES)
def test_accelerator_path_is_bit_identical_too(monkeypatch, where):
    """On an accelerator (no free host read of α) the node computes ``x − clamp(x, −α, α)``; run that form here."""
    monkeypatch.setattr(engine, "_scalar_threshold", lambda x, alpha: None)
    w, s, upstream = _case("sigmoid", SHAPES[where], torch.float64, seed=1)
    for a, b, what in zip(_run(soft_threshold, "sigmoid", w, s, upstream),
                          _run(soft_threshold_fused, "sigmoid", w, s, upstream), ("forward", "grad w", "grad s"),
                          strict=True):
        _assert_bit_identical(a, b, what)


def test_signs_of_zero_follow_the_plain_formula_except_negative_zero_inputs():
    """Pruned negative entries are -0.0 as ``sign(x)·0`` makes them; an input of exactly -0.0 gives -0.0 (plain:
    +0.0, since torch.sign(-0.0) is +0.0) — the same number, and optimizers never produce a -0.0 weight from a
    nonzero one. Likewise an upstream gradient of -0.0 on a kept entry passes through as -0.0 (plain: +0.0)."""
    x = torch.tensor([0.1, -0.1, 0.0, 0.5, -0.5, -0.0], dtype=torch.float64, requires_grad=True)
    alpha = torch.tensor(0.2, dtype=torch.float64)
    plain, fused = soft_threshold(x, alpha), soft_threshold_fused(x, alpha)
    _assert_bit_identical(plain[:5], fused[:5], "forward")
    assert fused[5] == 0 and plain[5] == 0
    (gx,) = torch.autograd.grad(fused, x, torch.tensor([1.0, 1.0, 1.0, -0.0, 2.0, 1.0], dtype=torch.float64))
    assert gx.tolist() == [0.0, 0.0, 0.0, 0.0, 2.0, 0.0]


@pytest.mark.parametrize("g", G_FUNCTIONS, ids=lambda g: g if isinstance(g, str) else g.__name__)
def test_gradient_semantics_of_str(g):
    """``∂y/∂x`` is the 0/1 mask ``|x| > α``; ``∂y/∂s = −sign(x)·g'(s)`` on kept entries, 0 on pruned ones."""
    w, s, _ = _case(g, (), torch.float64)
    alpha_of = get_threshold_function(g)
    jac_w, jac_s = torch.autograd.functional.jacobian(lambda w_, s_: soft_threshold_fused(w_, alpha_of(s_, 0.7)),
                                                      (w, s))
    kept = (w.abs() > alpha_of(s, 0.7)).to(w.dtype).reshape(-1)
    assert torch.equal(jac_w.reshape(w.numel(), w.numel()), torch.diag(kept))
    s_ = s.clone().requires_grad_()
    (g_prime,) = torch.autograd.grad(alpha_of(s_, 0.7), s_)
    assert torch.equal(jac_s.reshape(-1), -torch.sign(w).reshape(-1) * g_prime * kept)
    small = (w[:2, :2] * 1.0).requires_grad_()  # finite differences, away from the ties
    small.data[small.data.abs() < 0.25] = 0.6
    assert torch.autograd.gradcheck(lambda a, b: soft_threshold_fused(a, alpha_of(b, 0.7)),
                                    (small, s.clone().requires_grad_()))


def test_node_keeps_only_the_weight_and_its_output():
    """The backward needs x (the parameter itself) and y (which the layer saves anyway): nothing else is stored."""
    x = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    s = torch.tensor(-2.0, dtype=torch.float64, requires_grad=True)
    y = soft_threshold_fused(x, torch.sigmoid(s))
    saved = y.grad_fn.saved_tensors
    assert len(saved) == 2
    assert saved[0].data_ptr() == x.data_ptr() and saved[1].data_ptr() == y.data_ptr()


def test_training_steps_with_the_module_are_bit_identical():
    """A few SGD steps of a small CNN under UnstructuredSTR, fused vs plain (``fused = False``): every parameter,
    thresholds included, stays bit-identical in float64."""
    def build(fused: bool) -> nn.Module:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.Flatten(), nn.Linear(8 * 4 * 4, 5))
        strrnn.sparsify(model.double(), s_init=-1.5)
        for layer in model.modules():
            if isinstance(layer, UnstructuredSTR):
                layer.fused = fused
        return model

    torch.manual_seed(1)
    x, labels = torch.randn(16, 3, 8, 8, dtype=torch.float64), torch.randint(0, 5, (16,))
    models = {fused: build(fused) for fused in (False, True)}
    for model in models.values():
        optimizer = torch.optim.SGD(strrnn.param_groups(model, weight_decay=1e-2), lr=0.5, momentum=0.9)
        for _ in range(4):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), labels).backward()
            optimizer.step()
    plain, fused = (dict(models[f].named_parameters()) for f in (False, True))
    assert 0 < strrnn.sparsity(models[True][2]) < 1
    for name in plain:
        _assert_bit_identical(plain[name].detach(), fused[name].detach(), name)


@pytest.mark.filterwarnings("ignore:`torch.jit.trace")
def test_falls_back_to_the_plain_formula_where_the_node_does_not_apply():
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    for alpha in (torch.tensor(-0.1, dtype=torch.float64), torch.tensor(0.1), 0.1):  # negative, other dtype, float
        out = soft_threshold_fused(x, alpha)
        assert torch.equal(out, soft_threshold(x, alpha)) and out.grad_fn.name() == "MulBackward0"
    with torch.no_grad():
        alpha = torch.tensor(0.3, dtype=torch.float64)
        assert torch.equal(soft_threshold_fused(x, alpha), soft_threshold(x, alpha))
    layer = strrnn.unstructured(nn.Linear(3, 2), s_init=-1.0)
    traced = torch.jit.trace(layer, torch.randn(2, 3), check_trace=False)  # traces the plain ops, not a Python node
    probe = torch.randn(5, 3)
    assert torch.equal(traced(probe), layer(probe))
