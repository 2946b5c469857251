"""strrnn.SpectralGMP (spectral GMP, the baseline) on its own: the plain-PyTorch recipe (no Lightning)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import strrnn
from strrnn.factored import low_rank_params, originals
from strrnn.spectral_gmp import cubic, ranks_for_params


def _model(seed: int = 0, factors: str = "orthogonal") -> nn.Module:
    torch.manual_seed(seed)
    model = strrnn.models.build("keyword_spotter", in_chans=6, num_classes=3, hidden_size=12)
    strrnn.lowrank_rnn(model, factors=factors)
    return model


def _data(seed: int = 0, n: int = 48):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 10, 6, generator=g)
    y = (x[:, :, 0].mean(1) > 0).long() + (x[:, :, 1].mean(1) > 0.3).long()
    return x, y


def _train(model, sched, opt, steps: int, seed: int = 0) -> list[float]:
    x, y = _data(seed)
    losses = []
    for step in range(steps):
        idx = torch.arange(step * 8, step * 8 + 8) % len(y)
        opt.zero_grad()
        loss = F.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss))
    return losses


def test_cubic_schedule_values():
    assert cubic(-1.0) == 0.0 and cubic(0.0) == 0.0 and cubic(1.0) == 1.0 and cubic(2.0) == 1.0
    assert cubic(0.5) == pytest.approx(1 - 0.5**3)


def test_threshold_follows_the_schedule_relative_to_the_largest_singular_value(one_thread):
    model = _model()
    opt = torch.optim.Adam(strrnn.param_groups(model, weight_decay=1e-3), lr=1e-3)
    sched = strrnn.SpectralGMP(model, opt, total_steps=40, strength=0.6, start=0.1, end=0.5)
    cell = model.rnn.cells[0]
    p = cell.parametrizations["U"][0]
    for _ in range(10):  # 25% of training: halfway through the schedule
        sched.step()
    relative = 0.6 * cubic((10 / 40 - 0.1) / 0.4)
    assert sched.relative_threshold() == pytest.approx(relative)
    m = originals(cell, "U")[1]
    assert float(p.threshold().detach()) == pytest.approx(relative * float(m.abs().max()), rel=1e-5)
    assert not sched.done


def test_freeze_releases_into_plain_factors_and_resets_their_optimizer_state(one_thread):
    model = _model()
    opt = torch.optim.Adam(strrnn.param_groups(model, weight_decay=1e-3), lr=1e-3)
    sched = strrnn.SpectralGMP(model, opt, total_steps=20, strength=0.7, start=0.0, end=0.5)
    _train(model, sched, opt, 9)
    cell = model.rnn.cells[0]
    assert all(t in opt.state for t in originals(cell, "U"))
    sched.step()  # step 10 = end: frozen and released
    assert sched.done
    ranks = sched.ranks()
    for name in ("W", "U"):
        p = cell.parametrizations[name][0]
        assert p.is_released and p.min_rank == p.rank_cap == strrnn.rank(cell, name) == ranks[f"rnn.cells.0.{name}"]
        for tensor in originals(cell, name):
            assert tensor not in opt.state  # Adam's moments of the old parametrization are dropped
    # training goes on at those ranks, exactly like fixed-rank factors: W = A·diag(mask)·B
    losses = _train(model, sched, opt, 10)
    assert all(math.isfinite(v) for v in losses)
    assert sched.ranks() == ranks
    p = cell.parametrizations["U"][0]
    A, _, B = originals(cell, "U")
    assert torch.allclose(cell.U, (A * p.release_mask) @ B, atol=1e-6)
    assert torch.linalg.matrix_rank(cell.U.detach()) == ranks["rnn.cells.0.U"]


def test_stronger_strength_cuts_more(one_thread):
    params = []
    for strength in (0.0, 0.3, 0.6, 0.9):
        model = _model()
        opt = torch.optim.Adam(strrnn.param_groups(model, weight_decay=1e-3), lr=1e-3)
        sched = strrnn.SpectralGMP(model, opt, total_steps=12, strength=strength, start=0.0, end=0.5)
        _train(model, sched, opt, 6)
        assert sched.done
        params.append(sched.params())
    assert params == sorted(params, reverse=True) and params[0] > params[-1]
    assert params[0] == low_rank_params(12, 6, 6) + low_rank_params(12, 12, 12)  # strength 0 keeps every rank


def test_target_ranks_are_met_exactly(one_thread):
    model = _model()
    opt = torch.optim.Adam(strrnn.param_groups(model, weight_decay=1e-3), lr=1e-3)
    targets = {"rnn.cells.0.W": 2, "rnn.cells.0.U": 5}
    sched = strrnn.SpectralGMP(model, opt, total_steps=20, target_ranks=targets, end=0.5)
    _train(model, sched, opt, 20)
    assert sched.done and sched.ranks() == targets


def test_target_params_is_filled_from_the_top(one_thread):
    model = _model()
    opt = torch.optim.Adam(strrnn.param_groups(model, weight_decay=1e-3), lr=1e-3)
    sched = strrnn.SpectralGMP(model, opt, total_steps=20, target_params=150, end=0.5)  # dense: 72 + 144
    _train(model, sched, opt, 20)
    assert sched.done
    assert 150 - 24 < sched.params() <= 150  # within one rank step of U (12 + 12)


def test_state_dict_resumes_identically(one_thread):
    def run(split: int | None):
        model = _model(seed=3)
        opt = torch.optim.Adam(strrnn.param_groups(model, weight_decay=1e-3), lr=1e-3)
        sched = strrnn.SpectralGMP(model, opt, total_steps=16, strength=0.6, start=0.0, end=0.5)
        if split is None:
            _train(model, sched, opt, 16)
            return model
        _train(model, sched, opt, split)
        state = {"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()}
        fresh = _model(seed=99)
        fresh.load_state_dict(state["model"])
        opt2 = torch.optim.Adam(strrnn.param_groups(fresh, weight_decay=1e-3), lr=1e-3)
        opt2.load_state_dict(state["opt"])
        sched2 = strrnn.SpectralGMP(fresh, opt2, total_steps=16, strength=0.6, start=0.0, end=0.5)
        sched2.load_state_dict(state["sched"])
        x, y = _data()
        for step in range(split, 16):
            idx = torch.arange(step * 8, step * 8 + 8) % len(y)
            opt2.zero_grad()
            F.cross_entropy(fresh(x[idx]), y[idx]).backward()
            opt2.step()
            sched2.step()
        return fresh

    reference = run(None)
    for split in (3, 12):  # before and after the freeze
        resumed = run(split)
        for (name, a), (_, b) in zip(reference.state_dict().items(), resumed.state_dict().items()):
            assert torch.allclose(a.float(), b.float(), atol=1e-6), (split, name)


def test_bad_use_is_refused():
    free = _model(factors="free")
    with pytest.raises(ValueError, match="needs orthogonal factors"):
        strrnn.SpectralGMP(free, None, total_steps=10)
    with pytest.raises(ValueError, match="no low-rank STR tensor"):
        strrnn.SpectralGMP(nn.Linear(3, 3), None, total_steps=10)
    model = _model()
    with pytest.raises(ValueError, match="strength"):
        strrnn.SpectralGMP(model, None, total_steps=10, strength=1.5)
    with pytest.raises(ValueError, match="unknown tensors"):
        strrnn.SpectralGMP(model, None, total_steps=10, target_ranks={"rnn.cells.0.V": 2})
    with pytest.raises(ValueError, match="below what min_rank keeps"):
        strrnn.SpectralGMP(model, None, total_steps=10, target_params=5)


def test_ranks_for_params_removes_the_relatively_weakest_direction():
    spectra = {"a": torch.tensor([4.0, 2.0, 1.0]), "b": torch.tensor([1.0, 0.9, 0.1])}
    shapes = {"a": (10, 10), "b": (10, 10)}  # a rank step costs 20
    start = {"a": 3, "b": 3}  # 120 parameters
    assert ranks_for_params(spectra, shapes, start, 100) == {"a": 3, "b": 2}  # b's 0.1 / 1 goes first
    # then a's 1 / 4, then a's 2 / 4 (still weaker than b's 0.9 / 1)
    assert ranks_for_params(spectra, shapes, start, 79) == {"a": 1, "b": 2}
    assert ranks_for_params(spectra, shapes, start, 0) == {"a": 1, "b": 1}  # floors hold


def test_lr_lambda_restarts_the_cosine_at_the_freeze(one_thread):
    model = _model()
    opt = torch.optim.Adam(strrnn.param_groups(model, weight_decay=1e-3), lr=1e-3)
    sched = strrnn.SpectralGMP(model, opt, total_steps=20, strength=0.5, start=0.0, end=0.5)
    lr = torch.optim.lr_scheduler.LambdaLR(opt, sched.lr_lambda)
    seen = []
    for _ in range(20):
        sched.step()
        lr.step()
        seen.append(opt.param_groups[0]["lr"])
    assert sched.restart_step == 10
    assert seen[8] < seen[0] and seen[9] == pytest.approx(1e-3)  # back to the full rate at the freeze
    assert seen[-1] == pytest.approx(0.0, abs=1e-9)
    no_rewarm = strrnn.SpectralGMP(_model(), None, total_steps=20, strength=0.5, start=0.0, end=0.5, rewarm=False)
    for _ in range(20):
        no_rewarm.step()
    assert no_rewarm.restart_step is None and no_rewarm.lr_lambda(10) == pytest.approx(0.5)


def test_the_schedule_cuts_with_a_hard_threshold(one_thread):
    model = _model()
    sched = strrnn.SpectralGMP(model, None, total_steps=20, strength=0.6, start=0.0, end=0.9)
    for _ in range(8):
        sched.step()
    cell = model.rnn.cells[0]
    p = cell.parametrizations["U"][0]
    m = originals(cell, "U")[1].detach()
    spec = p.thresholded(m).detach()
    kept = spec != 0
    assert p.hard and 0 < int(kept.sum()) < m.numel()
    assert torch.equal(spec[kept], m[kept])  # survivors keep their value: no shrinkage by alpha
    assert bool((m[~kept].abs() <= m[kept].abs().min()).all())
