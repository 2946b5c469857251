"""Speech / sensor models, the model registry, and training them with STR applied from outside."""

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

import strrnn
from strrnn import models
from strrnn.models import HARClassifier, KeywordSpotter, build

D64 = torch.float64


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_registry_builds_models_and_lists_choices():
    assert models.available() == ["har", "keyword_spotter"]
    kws = build("keyword_spotter", num_classes=13, cell="lstm")
    assert isinstance(kws, KeywordSpotter) and kws.classifier.out_features == 13
    assert kws.rnn.cells[0].input_size == 32 and kws.rnn.hidden_size == 100
    har = build("har")
    assert isinstance(har, HARClassifier) and har.rnn.cells[0].input_size == 9 and har.rnn.hidden_size == 80
    assert har(torch.randn(2, 128, 9)).shape == (2, 2)
    with pytest.raises(ValueError, match="har, keyword_spotter"):
        build("resnet18")
    with pytest.raises(ValueError, match="fastgrnn, fastrnn, gru, lstm"):
        KeywordSpotter(cell="mamba")
    with pytest.raises(ValueError, match="last, mean"):
        KeywordSpotter(pooling="max")


def test_keyword_spotter_feature_size_error():
    with pytest.raises(ValueError, match="expects input feature size 32, got 40"):
        KeywordSpotter(n_classes=12)(torch.randn(2, 99, 40))


@pytest.mark.parametrize("cell", ["fastgrnn", "lstm"])
@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_pooling_with_lengths_equals_truncated_sequences(cell, pooling):
    model = KeywordSpotter(n_features=5, n_classes=3, cell=cell, hidden_size=6, pooling=pooling).to(D64)
    x = torch.randn(3, 8, 5, dtype=D64)
    lengths = torch.tensor([8, 3, 5])
    logits = model(x, lengths)
    for b, L in enumerate(lengths.tolist()):
        torch.testing.assert_close(logits[b], model(x[b:b + 1, :L])[0], rtol=0, atol=1e-10)
    # and by hand: mean pooling is the mean of the outputs, last pooling the final state
    out, h = model.rnn(x[:1])
    feat = out[0].mean(0) if pooling == "mean" else out[0, -1]
    torch.testing.assert_close(model(x[:1])[0], model.classifier(feat), rtol=0, atol=1e-12)


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_streaming_logits_equal_forward_on_prefix(pooling):
    model = KeywordSpotter(n_features=4, n_classes=3, hidden_size=5, num_layers=2, pooling=pooling).to(D64)
    x = torch.randn(2, 6, 4, dtype=D64)
    state = None
    for t in range(6):
        logits, state = model.step(x[:, t], state)
        torch.testing.assert_close(logits, model(x[:, : t + 1]), rtol=0, atol=1e-10)
    assert state.frames == 6


def test_bidirectional_last_pooling_uses_both_directions():
    model = KeywordSpotter(n_features=4, n_classes=3, cell="gru", hidden_size=5, bidirectional=True).to(D64)
    x = torch.randn(2, 6, 4, dtype=D64)
    out, _ = model.rnn(x)
    feat = torch.cat([out[:, -1, :5], out[:, 0, 5:]], dim=-1)
    torch.testing.assert_close(model(x), model.classifier(feat), rtol=0, atol=1e-12)


def _toy_task(n=256, T=12, seed=0):
    """Label = whether the first feature's running sum ends above zero, a task that needs memory."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, T, 4, generator=g)
    y = (x[:, :, 0].sum(1) > 0).long()
    return x, y


@pytest.mark.parametrize("cell", ["fastgrnn", "lstm"])
def test_200_steps_with_lowrank_str_stay_finite_and_learn(cell):
    x, y = _toy_task()
    model = KeywordSpotter(n_features=4, n_classes=2, cell=cell, hidden_size=16)
    strrnn.lowrank_rnn(model, max_rank={"W": 4, "U": 16})
    opt = torch.optim.Adam(strrnn.param_groups(model, weight_decay=1e-4), lr=1e-2)
    losses = []
    for step in range(200):
        idx = torch.randint(0, len(x), (64,), generator=torch.Generator().manual_seed(step))
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        assert torch.isfinite(loss)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert last < 0.7 * first, (first, last)
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    assert acc > 0.8
    # the exported model computes the same logits
    small = strrnn.export(model)
    assert not any(parametrize.is_parametrized(m) for m in small.modules())
    with torch.no_grad():
        torch.testing.assert_close(small(x), model(x), rtol=1e-4, atol=1e-4)


def test_unstructured_str_on_cell_weights_runs_through_the_dense_path():
    model = HARClassifier(n_features=4, hidden_size=6).to(D64)
    cell = model.rnn.cells[0]
    strrnn.unstructured(cell, "W")
    strrnn.sparsify(model)  # the classifier
    x = torch.randn(2, 5, 4, dtype=D64)
    out = model(x)
    ref_model = HARClassifier(n_features=4, hidden_size=6).to(D64)
    with torch.no_grad():
        for n, p in ref_model.named_parameters():
            mod, _, leaf = n.rpartition(".")
            p.copy_(getattr(model.get_submodule(mod), leaf))
    torch.testing.assert_close(out, ref_model(x), rtol=0, atol=1e-12)
    out.sum().backward()
    assert cell.parametrizations.W.original.grad is not None


def test_both_registries_share_one_vocabulary():
    from cnn import models as cnn_models

    rnn = build("keyword_spotter", num_classes=5, in_chans=7, hidden_size=6)
    assert rnn(torch.randn(2, 11, 7)).shape == (2, 5)
    cnn = cnn_models.build("small_cnn", num_classes=5, in_chans=2)
    assert cnn(torch.randn(2, 2, 16, 16)).shape == (2, 5)
    with pytest.warns(FutureWarning, match="pass num_classes="):
        assert build("keyword_spotter", n_classes=3, hidden_size=4).classifier.out_features == 3
    with pytest.warns(FutureWarning, match="pass in_chans="):
        cnn_models.build("small_cnn", num_classes=3, in_channels=3)
    with pytest.raises(ValueError, match="not both"):
        build("keyword_spotter", num_classes=3, n_classes=3)
