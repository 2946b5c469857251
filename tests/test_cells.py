"""Cells, the sequence runner, the hand-written FastGRNN/FastRNN backward, streaming, low-rank paths."""

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

import strrnn
from strrnn.cells import (
    CELLS,
    RNN,
    FastGRNNCell,
    FastRNNCell,
    GRUCell,
    LSTMCell,
    available_cells,
    build_cell,
    read_weight,
)
from strrnn.fastgrnn_kernel import fastgrnn_scan, fastrnn_scan

D64 = torch.float64


# -------------------------------------------------------------------------------------------------
# Independent per-step references (written from the papers' equations, not from strrnn code)
# -------------------------------------------------------------------------------------------------
def ref_fastgrnn(x, W, U, bg, bu, zeta, nu, h=None, fg=torch.sigmoid, fu=torch.tanh):
    """x (B, T, I) -> all states (B, T, H)."""
    B, T, _ = x.shape
    h = torch.zeros(B, U.shape[0], dtype=x.dtype) if h is None else h
    out = []
    for t in range(T):
        a = x[:, t] @ W.T + h @ U.T
        z = fg(a + bg)
        c = fu(a + bu)
        h = z * h + (torch.sigmoid(zeta) * (1 - z) + torch.sigmoid(nu)) * c
        out.append(h)
    return torch.stack(out, 1)


def ref_fastrnn(x, W, U, b, alpha, beta):
    B, T, _ = x.shape
    h = torch.zeros(B, U.shape[0], dtype=x.dtype)
    out = []
    for t in range(T):
        h = torch.sigmoid(alpha) * torch.tanh(x[:, t] @ W.T + h @ U.T + b) + torch.sigmoid(beta) * h
        out.append(h)
    return torch.stack(out, 1)


def randomize_(module, scale=0.5):
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * scale)
    return module


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


pytestmark = pytest.mark.usefixtures("one_thread")


# -------------------------------------------------------------------------------------------------
# Cells vs references
# -------------------------------------------------------------------------------------------------
def test_fastgrnn_init_follows_the_classic_implementation():
    torch.manual_seed(1)
    cell = FastGRNNCell(32, 100)
    assert cell.W.shape == (100, 32) and cell.U.shape == (100, 100)
    assert torch.equal(cell.bias_gate, torch.ones(100)) and torch.equal(cell.bias_update, torch.ones(100))
    assert cell.zeta.item() == 1.0 and cell.nu.item() == -4.0
    assert abs(cell.U.std().item() - 0.1) < 0.005 and abs(cell.W.mean().item()) < 0.01
    assert FastGRNNCell.recurrent_weights == ("W", "U")
    r = FastRNNCell(4, 5)
    assert r.alpha.item() == -3.0 and r.beta.item() == 3.0


@pytest.mark.parametrize("use_kernel", [True, False])
@pytest.mark.parametrize(
    "gate,update", [("sigmoid", "tanh"), ("tanh", "sigmoid"), ("relu", "tanh"), ("quantSigm", "quantTanh")]
)
def test_fastgrnn_matches_reference(gate, update, use_kernel):
    cell = randomize_(FastGRNNCell(5, 7, gate_nonlinearity=gate, update_nonlinearity=update).to(D64))
    cell.use_kernel = use_kernel
    fns = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu,
           "quantSigm": lambda v: ((v + 1) / 2).clamp(0, 1), "quantTanh": lambda v: v.clamp(-1, 1)}
    x = torch.randn(3, 6, 5, dtype=D64)
    h0 = torch.randn(3, 7, dtype=D64)
    ref = ref_fastgrnn(x, cell.W, cell.U, cell.bias_gate, cell.bias_update, cell.zeta, cell.nu, h0,
                       fns[gate], fns[update])
    out, h_n = RNN(cell)(x, h0[None])
    # (a relu gate lets the state grow large: compare relatively as well)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-6)
    torch.testing.assert_close(h_n[0], ref[:, -1], rtol=1e-10, atol=1e-6)
    # one step of the cell itself
    torch.testing.assert_close(cell(x[:, 0], h0), ref[:, 0], rtol=0, atol=1e-6)


@pytest.mark.parametrize("use_kernel", [True, False])
def test_fastrnn_matches_reference(use_kernel):
    cell = randomize_(FastRNNCell(5, 7).to(D64))
    cell.use_kernel = use_kernel
    x = torch.randn(3, 6, 5, dtype=D64)
    ref = ref_fastrnn(x, cell.W, cell.U, cell.bias_update, cell.alpha, cell.beta)
    out, _ = RNN(cell)(x)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)


def _copy_torch_cell(ours, theirs):
    with torch.no_grad():
        theirs.weight_ih.copy_(ours.W)
        theirs.weight_hh.copy_(ours.U)
        theirs.bias_ih.copy_(ours.bias_ih)
        theirs.bias_hh.copy_(ours.bias_hh)


@pytest.mark.parametrize("ours_cls,theirs_cls", [(LSTMCell, nn.LSTMCell), (GRUCell, nn.GRUCell)])
def test_lstm_gru_cells_match_torch_cells(ours_cls, theirs_cls):
    ours, theirs = ours_cls(6, 8), theirs_cls(6, 8)
    _copy_torch_cell(ours, theirs)
    x = torch.randn(4, 6)
    if ours_cls is LSTMCell:
        state = (torch.randn(4, 8), torch.randn(4, 8))
        for a, b in zip(ours(x, state), theirs(x, state), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    else:
        h = torch.randn(4, 8)
        torch.testing.assert_close(ours(x, h), theirs(x, h), rtol=0, atol=1e-5)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("layers,bidir", [(1, False), (2, True)])
def test_lstm_gru_runner_matches_torch_rnn(kind, fused, layers, bidir):
    ours = RNN(kind, 6, 8, num_layers=layers, bidirectional=bidir, fused=fused)
    theirs = (nn.LSTM if kind == "lstm" else nn.GRU)(6, 8, num_layers=layers, bidirectional=bidir, batch_first=True)
    with torch.no_grad():
        for i, cell in enumerate(ours.cells):
            layer, d = divmod(i, ours.num_directions)
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            getattr(theirs, "weight_ih" + sfx).copy_(cell.W)
            getattr(theirs, "weight_hh" + sfx).copy_(cell.U)
            getattr(theirs, "bias_ih" + sfx).copy_(cell.bias_ih)
            getattr(theirs, "bias_hh" + sfx).copy_(cell.bias_hh)
    x = torch.randn(3, 7, 6)
    out, h_n = ours(x)
    ref_out, ref_h = theirs(x)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-5)
    for a, b in zip(h_n if kind == "lstm" else (h_n,), ref_h if kind == "lstm" else (ref_h,), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_fused_path_equals_cell_path_with_lengths_and_grads(kind):
    fused = RNN(kind, 5, 6, num_layers=2, bidirectional=True, fused=True).to(D64)
    loop = RNN(kind, 5, 6, num_layers=2, bidirectional=True, fused=False).to(D64)
    loop.load_state_dict(fused.state_dict())
    x = torch.randn(4, 9, 5, dtype=D64)
    lengths = torch.tensor([9, 3, 7, 1])
    (o1, s1), (o2, s2) = fused(x, lengths=lengths), loop(x, lengths=lengths)
    torch.testing.assert_close(o1, o2, rtol=0, atol=1e-10)
    s1, s2 = (s1, s2) if kind == "lstm" else ((s1,), (s2,))
    for a, b in zip(s1, s2, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    (o1.square().sum() + s1[0].sum()).backward()
    (o2.square().sum() + s2[0].sum()).backward()
    for (n, p), q in zip(fused.named_parameters(), loop.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=1e-9, msg=n)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_low_rank_lstm_gru_run_fused_by_default_and_match_the_factored_loop(kind, monkeypatch):
    # rank 2 of 6: the factors save multiply-adds, but the fused kernel is still the faster path
    auto = RNN(kind, 5, 6).to(D64)
    strrnn.lowrank_rnn(auto, max_rank=2, threshold=False)
    loop = RNN(kind, 5, 6, fused=False).to(D64)
    strrnn.lowrank_rnn(loop, max_rank=2, threshold=False)
    loop.load_state_dict(auto.state_dict())
    x = torch.randn(3, 7, 5, dtype=D64)
    expected, _ = loop(x)

    def no_loop(*args):
        raise AssertionError("the default path must be the fused kernel")

    monkeypatch.setattr(auto, "_forward_loop", no_loop)
    out, _ = auto(x)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-10)


# -------------------------------------------------------------------------------------------------
# The hand-written backward
# -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("gate,update", [("sigmoid", "tanh"), ("tanh", "relu")])
@pytest.mark.parametrize("factored", [False, True])
def test_fastgrnn_kernel_gradcheck(gate, update, factored):
    T, B, H, r = 4, 3, 5, 2
    args = [torch.randn(T, B, H, dtype=D64), torch.randn(B, H, dtype=D64)]
    args += [torch.randn(H, r, dtype=D64), torch.randn(r, H, dtype=D64)] if factored else [torch.randn(H, H, dtype=D64)]
    args += [torch.randn(H, dtype=D64), torch.randn(H, dtype=D64), torch.randn(1, dtype=D64), torch.randn(1, dtype=D64)]
    args = [a.requires_grad_() for a in args]

    def f(*a):
        if factored:
            return fastgrnn_scan(*a, gate=gate, update=update)
        return fastgrnn_scan(a[0], a[1], a[2], None, *a[3:], gate=gate, update=update)

    assert torch.autograd.gradcheck(f, args)


@pytest.mark.parametrize("factored", [False, True])
def test_fastrnn_kernel_gradcheck(factored):
    T, B, H, r = 4, 3, 5, 2
    args = [torch.randn(T, B, H, dtype=D64), torch.randn(B, H, dtype=D64)]
    args += [torch.randn(H, r, dtype=D64), torch.randn(r, H, dtype=D64)] if factored else [torch.randn(H, H, dtype=D64)]
    args += [torch.randn(1, dtype=D64), torch.randn(1, dtype=D64)]
    args = [a.requires_grad_() for a in args]

    def f(*a):
        return fastrnn_scan(*a) if factored else fastrnn_scan(a[0], a[1], a[2], None, *a[3:])

    assert torch.autograd.gradcheck(f, args)


@pytest.mark.parametrize("kind", ["fastgrnn", "fastrnn"])
def test_kernel_gradients_equal_autograd_loop(kind):
    a = randomize_(build_cell(kind, 4, 6).to(D64), 0.3)
    b = build_cell(kind, 4, 6).to(D64)
    b.load_state_dict(a.state_dict())
    b.use_kernel = False
    x = torch.randn(3, 8, 4, dtype=D64)
    lengths = torch.tensor([8, 2, 5])
    for cell in (a, b):
        out, h = RNN(cell, bidirectional=False)(x, lengths=lengths)
        (out.sin().sum() + h.square().sum()).backward()
    for (n, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-7, atol=1e-9, msg=n)


# -------------------------------------------------------------------------------------------------
# Streaming and variable lengths
# -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", sorted(CELLS))
def test_streaming_equals_whole_sequence(kind):
    rnn = RNN(kind, 5, 6, num_layers=2).to(D64)
    x = torch.randn(3, 7, 5, dtype=D64)
    out, h_n = rnn(x)
    state, steps = None, []
    for t in range(7):
        o, state = rnn.step(x[:, t], state)
        steps.append(o)
    torch.testing.assert_close(torch.stack(steps, 1), out, rtol=0, atol=1e-10)
    for a, b in zip(state if isinstance(state, tuple) else (state,), h_n if isinstance(h_n, tuple) else (h_n,),
                    strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    # the first layer's cell stepped on its own ends in the first layer's final state
    cell, s = rnn.cells[0], None
    for t in range(7):
        s = cell.step(x[:, t], s)
    layer0 = h_n[0][0] if isinstance(h_n, tuple) else h_n[0]
    torch.testing.assert_close(cell.hidden(s), layer0, rtol=0, atol=1e-10)


@pytest.mark.parametrize("kind", sorted(CELLS))
@pytest.mark.parametrize("bidir", [False, True])
def test_variable_lengths_pick_last_valid_state(kind, bidir):
    rnn = RNN(kind, 4, 5, bidirectional=bidir).to(D64)
    lengths = torch.tensor([6, 2, 4])
    x = torch.randn(3, 6, 4, dtype=D64)
    out, h_n = rnn(x, lengths=lengths)
    h = h_n[0] if isinstance(h_n, tuple) else h_n
    for b, L in enumerate(lengths.tolist()):
        # the same sequence alone, truncated, with garbage beyond its end in the batch above
        o_alone, h_alone = rnn(x[b:b + 1, :L])
        h_alone = h_alone[0] if isinstance(h_alone, tuple) else h_alone
        torch.testing.assert_close(h[:, b], h_alone[:, 0], rtol=0, atol=1e-10)
        torch.testing.assert_close(out[b, :L], o_alone[0], rtol=0, atol=1e-10)
        assert torch.all(out[b, L:] == 0)


def test_lengths_out_of_range_and_bidirectional_step_raise():
    rnn = RNN("fastgrnn", 4, 5)
    with pytest.raises(ValueError, match="lengths"):
        rnn(torch.randn(2, 3, 4), lengths=torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="lengths"):
        rnn(torch.randn(2, 3, 4), lengths=torch.tensor([4, 3]))
    with pytest.raises(ValueError, match="unidirectional"):
        RNN("gru", 4, 5, bidirectional=True).step(torch.randn(2, 4))


# -------------------------------------------------------------------------------------------------
# Low-rank weights: factor protocol, read once per sequence, export
# -------------------------------------------------------------------------------------------------
class CountingFactors(nn.Module):
    """A duck-typed factor parametrization (test-local): W = A diag(m) B; counts its evaluations."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def factors(self, A, m, B):
        self.calls += 1
        return A, m, B

    def forward(self, A, m, B):
        self.calls += 1
        return (A * m) @ B

    def right_inverse(self, W):
        U, S, Vh = torch.linalg.svd(W, full_matrices=False)
        r = 2
        return U[:, :r].contiguous(), S[:r].contiguous(), Vh[:r].contiguous()


@pytest.mark.parametrize("kind", ["fastgrnn", "fastrnn", "lstm", "gru"])
def test_factored_path_equals_dense_path_and_reads_weights_once(kind):
    model = RNN(kind, 6, 10).to(D64)
    cell = model.cells[0]
    for name in ("W", "U"):
        parametrize.register_parametrization(cell, name, CountingFactors())
    assert read_weight(cell, "U").factored  # rank 2: 2*(out+in) < out*in
    dense = RNN(kind, 6, 10).to(D64)
    dense.cells[0].load_state_dict({k: v for k, v in cell.state_dict().items() if "parametrizations" not in k},
                                   strict=False)
    with torch.no_grad():
        dense.cells[0].W.copy_(cell.W)
        dense.cells[0].U.copy_(cell.U)
    x = torch.randn(2, 9, 6, dtype=D64)
    for p in (cell.parametrizations.W[0], cell.parametrizations.U[0]):
        p.calls = 0
    out, _ = model(x)
    assert [cell.parametrizations[n][0].calls for n in ("W", "U")] == [1, 1]  # once per sequence, not per step
    ref, _ = dense(x)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-10)
    # gradients through the factors equal those through the materialized weight (parametrize.cached() ->
    # dense path)
    out.square().sum().backward()
    g1 = [p.grad.clone() for p in cell.parameters()]
    cell.zero_grad()
    with parametrize.cached():
        assert not read_weight(cell, "U").factored
        model(x)[0].square().sum().backward()
    for a, b in zip(g1, [p.grad for p in cell.parameters()], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


def test_lowrank_str_full_rank_uses_dense_and_cut_rank_uses_factors():
    cell = FastGRNNCell(32, 100)
    strrnn.lowrank(cell, "W")
    strrnn.lowrank(cell, "U")
    assert not read_weight(cell, "U").factored  # rank 100 of 100x100: dense is cheaper
    with torch.no_grad():  # cut the spectrum to rank 20: 20*200 < 100*100
        cell.parametrizations.U.original1[20:] = 0.0
    op = read_weight(cell, "U")
    assert op.factored and op.rank == 20
    torch.testing.assert_close(op.dense(), cell.U, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["fastgrnn", "lstm"])
@pytest.mark.parametrize("factors", ["free", "orthogonal"])
def test_lowrank_str_rnn_equals_dense_rnn_and_export_equals_trained(kind, factors):
    model = RNN(kind, 8, 12, num_layers=2).to(D64)
    strrnn.lowrank_rnn(model, factors=factors, max_rank={"W": 6, "U": 10})
    with torch.no_grad():  # cut ranks so the factored path is taken for U (3*(48+12) < 48*12 for LSTM too)
        for cell in model.cells:
            cell.parametrizations.U.original1[3:] = 0.0
    x = torch.randn(3, 5, 8, dtype=D64)
    out, h = model(x)
    dense = RNN(kind, 8, 12, num_layers=2).to(D64)
    with torch.no_grad():
        for a, b in zip(model.cells, dense.cells, strict=True):
            for n, p in b.named_parameters():
                p.copy_(getattr(a, n))
    ref, _ = dense(x)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-9)
    small = strrnn.export(model)
    assert not any(parametrize.is_parametrized(c) for c in small.cells)
    assert small.cells[0].U_left.shape[1] == 3 and "U" not in small.cells[0]._parameters
    torch.testing.assert_close(small(x)[0], out, rtol=0, atol=1e-9)
    torch.testing.assert_close(small.cells[0].U, model.cells[0].U, rtol=0, atol=1e-9)
    # state dict round-trip into a fresh (dense) model
    fresh = RNN(kind, 8, 12, num_layers=2).to(D64)
    fresh.load_state_dict(small.state_dict())
    torch.testing.assert_close(fresh(x)[0], out, rtol=0, atol=1e-9)
    # streaming on the exported model
    s, o = None, None
    for t in range(5):
        o, s = small.step(x[:, t], s)
    torch.testing.assert_close(o, out[:, -1], rtol=0, atol=1e-9)


def test_export_low_rank_rejects_bad_shapes():
    cell = FastGRNNCell(4, 6)
    with pytest.raises(ValueError, match="expected left"):
        cell.export_low_rank("U", torch.randn(6, 2), torch.randn(2, 4))
    with pytest.raises(ValueError, match="no recurrent weight"):
        cell.export_low_rank("bias_gate", torch.randn(6, 2), torch.randn(2, 6))


# -------------------------------------------------------------------------------------------------
# Registry and errors
# -------------------------------------------------------------------------------------------------
def test_registry_and_same_constructor_shape():
    assert available_cells() == ["fastgrnn", "fastrnn", "gru", "lstm"]
    for name in available_cells():
        cell = build_cell(name, 3, 4)
        assert type(cell) is CELLS[name] and cell.input_size == 3 and cell.hidden_size == 4
        assert cell.W.shape == (cell.n_gates * 4, 3) and cell.U.shape == (cell.n_gates * 4, 4)
    assert isinstance(build_cell("FastGRNN", 3, 4), FastGRNNCell)
    assert build_cell("fastgrnn", 3, 4, zeta_init=2.0).zeta.item() == 2.0


def test_unknown_cell_lists_choices():
    with pytest.raises(ValueError, match="fastgrnn, fastrnn, gru, lstm"):
        build_cell("transformer", 3, 4)
    with pytest.raises(ValueError, match="fastgrnn, fastrnn, gru, lstm"):
        RNN("elman", 3, 4)
    with pytest.raises(ValueError, match="nonlinearity"):
        FastGRNNCell(3, 4, gate_nonlinearity="swish")


@pytest.mark.parametrize("kind", sorted(CELLS))
def test_wrong_feature_size_names_expected_and_given(kind):
    rnn = RNN(kind, 32, 8)
    with pytest.raises(ValueError, match=r"expects input feature size 32, got 16"):
        rnn(torch.randn(2, 5, 16))
    with pytest.raises(ValueError, match=r"expects input feature size 32, got 16"):
        rnn.cells[0](torch.randn(2, 16))
    with pytest.raises(ValueError, match="3-D"):
        rnn(torch.randn(5, 32))


def test_rnn_from_cell_instance_clones_configuration():
    rnn = RNN(FastGRNNCell(3, 4, zeta_init=0.5), num_layers=2, bidirectional=True, batch_first=False)
    assert len(rnn.cells) == 4 and rnn.cells[2].input_size == 8 and rnn.cells[3].zeta.item() == 0.5
    out, h = rnn(torch.randn(6, 2, 3))  # time-major
    assert out.shape == (6, 2, 8) and h.shape == (4, 2, 4)
    with pytest.raises(ValueError, match="disagrees"):
        RNN(FastGRNNCell(3, 4), input_size=5)


def test_execution_path_is_decided_in_one_place_as_its_table_says():
    x = torch.randn(3, 5, 4)
    fast = RNN("fastgrnn", 4, 6)
    assert fast.execution_path(x) == "kernel"  # parameters require grad: the hand-written backward
    with torch.no_grad():
        assert fast.execution_path(x) == "infer"
        assert fast.execution_path(x, lengths=torch.tensor([5, 4, 3])) == "kernel"
    assert RNN("lstm", 4, 6).execution_path(x) == "fused" and RNN("gru", 4, 6).execution_path(x) == "fused"
    assert RNN("fastrnn", 4, 6, update_nonlinearity=torch.sin).execution_path(x) == "loop"
    fast.cells[0].use_kernel = False
    assert fast.execution_path(x) == "loop"
    # and forward takes that path: the loop's and the kernel's outputs agree
    out_loop = fast(x)[0]
    fast.cells[0].use_kernel = True
    assert torch.allclose(out_loop, fast(x)[0], atol=1e-6)
