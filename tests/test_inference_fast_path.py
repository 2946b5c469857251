"""The inference fast path of FastGRNN/FastRNN (no autograd graph): equal to the reference paths, whole clips and
streaming, dense and exported low-rank; taken only where no gradient is needed; invalidated when weights change."""

import pytest
import torch
from torch import nn

import strrnn
import strrnn.cells as cells_module
from strrnn.cells import RNN, FastGRNNCell, _FusedStep
from strrnn.models import KeywordSpotter

D64 = torch.float64
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def randomize_(module, scale=0.5):
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * scale)
    return module


def exported_lowrank(model, max_rank):
    """``strrnn.lowrank_rnn`` at ``max_rank`` then ``strrnn.export`` (a weight is kept as factors ``*_left`` /
    ``*_right`` where they are smaller). ``model`` itself is parametrized in place."""
    strrnn.lowrank_rnn(model, max_rank=max_rank)
    return strrnn.export(model).eval()


class Counting:
    """Counts the calls of a module-level function of strrnn.cells (to see which path ran)."""

    def __init__(self, monkeypatch, name):
        self.calls = 0
        original = getattr(cells_module, name)

        def wrapper(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(cells_module, name, wrapper)


def reference(rnn: RNN, x, state=None):
    """The same RNN through its pre-existing paths: the autograd kernel (grad enabled) and the plain loop."""
    with torch.enable_grad():
        out, h_n = rnn(x, state)
    return out.detach(), h_n.detach()


# -------------------------------------------------------------------------------------------------
# Whole sequences
# -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("gate,update", [("sigmoid", "tanh"), ("tanh", "sigmoid"), ("relu", "tanh"),
                                         ("sigmoid", "relu")])
@pytest.mark.parametrize("batch_first", [True, False])
def test_fastgrnn_whole_sequence_equals_reference(monkeypatch, gate, update, batch_first):
    rnn = RNN("fastgrnn", 5, 7, num_layers=2, batch_first=batch_first, gate_nonlinearity=gate,
              update_nonlinearity=update)
    randomize_(rnn)
    x = torch.randn(3, 6, 5)
    state = torch.randn(2, 3 if batch_first else 6, 7) * 0.5
    ref_out, ref_h = reference(rnn, x, state)
    plain = RNN("fastgrnn", 5, 7, num_layers=2, batch_first=batch_first, gate_nonlinearity=gate,
                update_nonlinearity=update)
    plain.load_state_dict(rnn.state_dict())
    for cell in plain.cells:
        cell.use_kernel = False  # the plain per-step ops (what ONNX export traces)
    with torch.no_grad():
        plain_out, _ = plain(x, state)
        spy = Counting(monkeypatch, "fastgrnn_infer_")
        out, h_n = rnn(x, state)
    assert spy.calls == 2  # one per layer: the fast path ran
    assert out.shape == ref_out.shape and h_n.shape == ref_h.shape
    # (a relu gate lets the state grow large: compare relatively as well)
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(h_n, ref_h, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out, plain_out, rtol=1e-5, atol=1e-5)


def test_fastrnn_whole_sequence_equals_reference(monkeypatch):
    rnn = randomize_(RNN("fastrnn", 5, 7).to(D64))
    x = torch.randn(4, 9, 5, dtype=D64)
    ref_out, ref_h = reference(rnn, x)
    with torch.no_grad():
        spy = Counting(monkeypatch, "fastrnn_infer_")
        out, h_n = rnn(x)
    assert spy.calls == 1
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-12)
    torch.testing.assert_close(h_n, ref_h, rtol=0, atol=1e-12)


@pytest.mark.parametrize("ranks", [{"W": 3, "U": 6}, {"W": 3}, {"U": 6}])
def test_exported_lowrank_spotter_equals_reference_in_float32(ranks):
    model = KeywordSpotter(n_features=12, n_classes=5, hidden_size=20)
    randomize_(model, 0.3)
    small = exported_lowrank(model, {"W": 12, "U": 20, **ranks})
    cell = small.rnn.cells[0]
    assert all((f"{n}_left" in cell._parameters) == (n in ranks) for n in ("W", "U"))
    x = torch.randn(6, 30, 12)
    with torch.enable_grad():
        expected = small(x).detach()  # the autograd kernel path of the exported model
    with torch.no_grad():
        got = small(x)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_fast_path_only_without_a_graph(monkeypatch):
    rnn = randomize_(RNN("fastgrnn", 4, 6))
    x = torch.randn(2, 5, 4)
    spy = Counting(monkeypatch, "fastgrnn_infer_")
    out, _ = rnn(x)  # parameters require grad: the autograd kernel path, differentiable
    assert spy.calls == 0 and out.requires_grad
    out.sum().backward()
    assert rnn.cells[0].U.grad is not None
    rnn.requires_grad_(False)
    out2, _ = rnn(x)  # grad mode on, but nothing requires grad: no graph needed
    assert spy.calls == 1 and not out2.requires_grad
    torch.testing.assert_close(out2, out.detach(), rtol=0, atol=1e-6)
    rnn.requires_grad_(True)
    with torch.no_grad():
        rnn(x, lengths=torch.tensor([5, 3]))  # lengths: the general path
        RNN("fastgrnn", 4, 6, bidirectional=True)(x)
    assert spy.calls == 1
    rnn.cells[0].use_kernel = False  # the switch ONNX export uses
    with torch.no_grad():
        rnn(x)
    assert spy.calls == 1


def test_fast_path_does_not_modify_the_input_or_the_initial_state():
    rnn = randomize_(RNN("fastgrnn", 4, 6))
    x, state = torch.randn(2, 5, 4), torch.randn(1, 2, 6)
    x0, s0 = x.clone(), state.clone()
    with torch.no_grad():
        out, h_n = rnn(x, state)
    assert torch.equal(x, x0) and torch.equal(state, s0)
    assert h_n.data_ptr() != out.data_ptr()  # the final state is its own tensor
    h_n.zero_()
    assert out.abs().sum() > 0


# -------------------------------------------------------------------------------------------------
# Streaming
# -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pooling", ["last", "mean"])
@pytest.mark.parametrize("lowrank", [False, True])
def test_streaming_step_by_step_equals_whole_clip(pooling, lowrank):
    model = randomize_(KeywordSpotter(n_features=12, n_classes=5, hidden_size=20, pooling=pooling), 0.3).eval()
    if lowrank:
        model = exported_lowrank(model, {"W": 4, "U": 7})
    x = torch.randn(3, 25, 12)
    with torch.no_grad():
        whole = model(x)
        state, logits = None, None
        for t in range(x.shape[1]):
            logits, state = model.step(x[:, t], state)
    torch.testing.assert_close(logits, whole, rtol=0, atol=1e-5)
    with torch.enable_grad():  # the reference step (autograd ops) agrees frame by frame
        ref_state = None
        for t in range(x.shape[1]):
            ref_logits, ref_state = model.step(x[:, t], ref_state)
    torch.testing.assert_close(logits, ref_logits.detach(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("ranks", [None, {"W": 4, "U": 20}, {"W": 12, "U": 7}, {"W": 4, "U": 7}])
@pytest.mark.parametrize("batch", [1, _FusedStep.BLOCK_MAX_BATCH + 1])
def test_fused_step_product_equals_separate_products(ranks, batch):
    model = randomize_(KeywordSpotter(n_features=12, n_classes=5, hidden_size=20), 0.3)
    cell = (exported_lowrank(model, ranks) if ranks else model).rnn.cells[0]
    w = cell.read_weights()
    fused = _FusedStep(w["W"], w["U"], cell.bias_gate)
    assert (fused.block is not None) == (ranks is not None and ranks["W"] < 12 and ranks["U"] < 20)
    x, h = torch.randn(batch, 12), torch.randn(batch, 20)
    with torch.no_grad():
        expected = w["W"](x, cell.bias_gate) + w["U"](h)
        torch.testing.assert_close(fused(x, h), expected, rtol=0, atol=1e-5)


def test_step_cache_follows_weight_changes():
    cell = randomize_(FastGRNNCell(4, 6)).eval()
    x, h = torch.randn(2, 4), torch.randn(2, 6)
    with torch.no_grad():
        first = cell(x, h)
        assert cell(x, h).equal(first)  # cached constants reused
        cell.U.mul_(2.0)  # in place (an optimizer step, load_state_dict): the version changes
        cell.zeta.add_(1.0)
        changed = cell(x, h)
    with torch.enable_grad():
        expected = cell(x, h).detach()  # the autograd reference step with the current weights
    assert not changed.equal(first)
    torch.testing.assert_close(changed, expected, rtol=0, atol=1e-6)
    fresh = FastGRNNCell(4, 6)
    fresh.load_state_dict(cell.state_dict())
    cell.U = nn.Parameter(torch.zeros(6, 6))  # replaced outright
    with torch.no_grad():
        torch.testing.assert_close(fresh(x, h), expected, rtol=0, atol=1e-6)
        assert not cell(x, h).equal(changed)


def test_parametrized_cell_under_no_grad_uses_current_weights():
    """A cell still training with STR (validation runs under no_grad) reads its weights every call."""
    cell = randomize_(FastGRNNCell(4, 6))
    strrnn.lowrank(cell, "U", max_rank=3)
    x, h = torch.randn(2, 4), torch.randn(2, 6)
    with torch.no_grad():
        first = cell(x, h)
        cell.parametrizations.U.original1.mul_(0.5)  # the spectrum
        second = cell(x, h)
    with torch.enable_grad():
        expected = cell(x, h).detach()
    assert not second.equal(first)
    torch.testing.assert_close(second, expected, rtol=0, atol=1e-6)


def test_exported_state_dict_round_trip_keeps_the_fast_path_equal(tmp_path):
    model = randomize_(KeywordSpotter(n_features=12, n_classes=5, hidden_size=20), 0.3)
    small = exported_lowrank(model, {"W": 4, "U": 7})
    torch.save(small.state_dict(), tmp_path / "small.pt")
    fresh = KeywordSpotter(n_features=12, n_classes=5, hidden_size=20).eval()
    fresh.load_state_dict(torch.load(tmp_path / "small.pt", weights_only=True))
    assert "U_left" in fresh.rnn.cells[0]._parameters
    x = torch.randn(2, 10, 12)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), small(x), rtol=0, atol=1e-6)


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::torch.jit.TracerWarning")
def test_tracing_and_torch_export_use_the_plain_ops():
    """ONNX export traces (legacy exporter) or runs torch.export (dynamo exporter): both must see plain ops."""
    model = randomize_(KeywordSpotter(n_features=6, n_classes=3, hidden_size=8), 0.3).eval()
    x = torch.randn(2, 5, 6)
    with torch.no_grad():
        expected = model(x)
        traced = torch.jit.trace(model, (x,), check_trace=False)
        exported = torch.export.export(model, (x,))
    graph = str(traced.graph)
    assert "addmm_" not in graph and "addcmul" not in graph  # not the in-place inference loop
    targets = " ".join(str(node.target) for node in exported.graph.nodes)
    assert "addmm_" not in targets and "addcmul" not in targets
    with torch.no_grad():
        torch.testing.assert_close(traced(x), expected, rtol=0, atol=1e-6)
        torch.testing.assert_close(exported.module()(x), expected, rtol=0, atol=1e-6)


# -------------------------------------------------------------------------------------------------
# The latency benchmark's building blocks
# -------------------------------------------------------------------------------------------------
def test_benchmark_stream_step_and_macs():
    from benchmarks.inference_latency import StreamStep, cell_macs

    model = randomize_(KeywordSpotter(n_features=12, n_classes=5, hidden_size=20), 0.3).eval()
    assert cell_macs(model) == 20 * 12 + 20 * 20
    small = exported_lowrank(model, {"W": 4, "U": 7})
    assert cell_macs(small) == 4 * (20 + 12) + 7 * (20 + 20)
    x = torch.randn(2, 9, 12)
    step = StreamStep(small)
    h = torch.zeros(1, 2, 20)
    with torch.no_grad():
        for t in range(9):
            logits, h = step(x[:, t], h)
        torch.testing.assert_close(logits, small(x), rtol=0, atol=1e-5)


# -------------------------------------------------------------------------------------------------
# The training kernel's reused buffers (strrnn.fastgrnn_kernel._lease / _scratch)
# -------------------------------------------------------------------------------------------------
def _grads(rnn, x):
    rnn.zero_grad()
    out, h = rnn(x)
    (out.sin().sum() + h.square().sum()).backward()
    return [p.grad.clone() for p in rnn.parameters()]


def test_kernel_buffers_survive_graphs_alive_together_and_retained_graphs():
    rnn = randomize_(RNN("fastgrnn", 4, 6).to(D64), 0.3)
    plain = RNN("fastgrnn", 4, 6).to(D64)
    plain.load_state_dict(rnn.state_dict())
    plain.cells[0].use_kernel = False
    xa, xb = torch.randn(3, 7, 4, dtype=D64), torch.randn(5, 9, 4, dtype=D64)  # different shapes
    expected_a, expected_b = _grads(plain, xa), _grads(plain, xb)
    # two graphs alive at once (their saved buffers must not be shared), backward in the other order
    rnn.zero_grad()
    loss_a = sum(t.sin().sum() if i == 0 else t.square().sum() for i, t in enumerate(rnn(xa)))
    loss_b = sum(t.sin().sum() if i == 0 else t.square().sum() for i, t in enumerate(rnn(xb)))
    loss_b.backward(retain_graph=True)
    got_b = [p.grad.clone() for p in rnn.parameters()]
    rnn.zero_grad()
    loss_a.backward()
    got_a = [p.grad.clone() for p in rnn.parameters()]
    rnn.zero_grad()
    _grads(rnn, xa)  # a new graph while b's retained graph is alive
    rnn.zero_grad()
    loss_b.backward()  # the retained graph again: its saved buffers were not handed out meanwhile
    again_b = [p.grad.clone() for p in rnn.parameters()]
    for got, want in ((got_a, expected_a), (got_b, expected_b), (again_b, expected_b)):
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, rtol=1e-7, atol=1e-9)


def test_training_steps_repeat_exactly_with_reused_buffers():
    torch.manual_seed(3)
    x, y = torch.randn(8, 12, 5), torch.randint(0, 3, (8,))
    losses = []
    for _ in range(2):
        torch.manual_seed(4)
        model = KeywordSpotter(n_features=5, n_classes=3, hidden_size=10)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        run = []
        for _ in range(4):
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.append(loss.item())
        losses.append(run)
    assert losses[0] == losses[1]


@pytest.mark.parametrize("use", ["final", "sequence", "both"])
def test_kernel_gradients_whichever_output_is_used(use):
    """The final state is its own kernel output: a loss on it alone leaves the sequence's gradient None."""
    rnn = randomize_(RNN("fastgrnn", 4, 6, num_layers=2).to(D64), 0.3)
    plain = RNN("fastgrnn", 4, 6, num_layers=2).to(D64)
    plain.load_state_dict(rnn.state_dict())
    for cell in plain.cells:
        cell.use_kernel = False
    x = torch.randn(3, 7, 4, dtype=D64)
    grads = []
    for model in (rnn, plain):
        out, h_n = model(x)
        loss = {"final": h_n.square().sum(), "sequence": out.sin().sum(),
                "both": h_n.square().sum() + out.sin().sum()}[use]
        loss.backward()
        grads.append([p.grad for p in model.parameters()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9)


def test_fastgrnn_scan_final_gradcheck():
    from strrnn.fastgrnn_kernel import fastgrnn_scan_final

    T, B, H = 4, 3, 5
    args = [torch.randn(T, B, H, dtype=D64), torch.randn(B, H, dtype=D64), torch.randn(H, H, dtype=D64) * 0.5,
            torch.randn(H, dtype=D64), torch.randn(H, dtype=D64), torch.randn(1, dtype=D64), torch.randn(1, dtype=D64)]
    args = [a.requires_grad_() for a in args]

    def f(wx, h0, u, bg, bu, zeta, nu):
        hs, h_last = fastgrnn_scan_final(wx, h0, u, None, bg, bu, zeta, nu)
        return hs.sin().sum() + (h_last * 1.7).cos().sum()

    assert torch.autograd.gradcheck(f, args)
    assert torch.autograd.gradcheck(lambda *a: fastgrnn_scan_final(a[0], a[1], a[2], None, *a[3:])[1], args)


@pytest.mark.parametrize("update", ["tanh", "sigmoid"])
def test_kernel_when_zeta_and_nu_sigmoids_underflow(update):
    """sigmoid(zeta) + sigmoid(nu) == 0 exactly (the kernel keeps k*c otherwise): h' = z*h, same as the loop."""
    rnn = randomize_(RNN("fastgrnn", 4, 6, update_nonlinearity=update).to(D64), 0.3)
    with torch.no_grad():
        rnn.cells[0].zeta.fill_(-800.0)
        rnn.cells[0].nu.fill_(-800.0)
    plain = RNN("fastgrnn", 4, 6, update_nonlinearity=update).to(D64)
    plain.load_state_dict(rnn.state_dict())
    plain.cells[0].use_kernel = False
    x, h0 = torch.randn(3, 5, 4, dtype=D64), torch.randn(1, 3, 6, dtype=D64)
    outs, grads = [], []
    for model in (rnn, plain):
        out, h_n = model(x, h0)
        (out.sin().sum() + h_n.sum()).backward()
        outs.append(out.detach())
        grads.append([p.grad for p in model.parameters()])
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=1e-12)
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9)
