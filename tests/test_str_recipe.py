"""strrnn.STRRecipe on its own (learned thresholds, no Lightning), and --mode lowrank's thresholds learning."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import strrnn
from strrnn.factored import originals
from strrnn.threshold import threshold_group


def _model(seed: int = 0, factors: str = "orthogonal", relative: bool = True, s_init: float = -10.0) -> nn.Module:
    torch.manual_seed(seed)
    model = strrnn.models.build("keyword_spotter", in_chans=6, num_classes=3, hidden_size=12)
    strrnn.lowrank_rnn(model, factors=factors, relative=relative, s_init=s_init)
    return model


def _data(seed: int = 0, n: int = 48):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 10, 6, generator=g)
    y = (x[:, :, 0].mean(1) > 0).long() + (x[:, :, 1].mean(1) > 0.3).long()
    return x, y


def _optimizer(model, decay: float = 1.0):
    return torch.optim.Adam(strrnn.param_groups(model, weight_decay=1e-3, threshold_decay=decay), lr=3e-3)


def _optimizer_step(model, opt, x, y, step: int) -> torch.Tensor:
    """One Adam step on the step-th batch of 8 (cycling over the data); returns the loss."""
    idx = torch.arange(step * 8, step * 8 + 8) % len(y)
    opt.zero_grad()
    loss = F.cross_entropy(model(x[idx]), y[idx])
    loss.backward()
    opt.step()
    return loss


def _train(model, recipe, opt, steps: int, seed: int = 0) -> list[float]:
    x, y = _data(seed)
    losses = []
    for step in range(steps):
        loss = _optimizer_step(model, opt, x, y, step)
        if recipe is not None:
            recipe.step()
        losses.append(loss.item())
    return losses


def _thresholds(model) -> list[torch.Tensor]:
    return [cell.parametrizations[name][0].threshold.s for cell in model.rnn.cells for name in ("W", "U")]


def test_relative_threshold_is_a_fraction_of_the_largest_spectrum_entry():
    model = _model(s_init=math.log(0.25))
    cell = model.rnn.cells[0]
    p = cell.parametrizations["U"][0]
    m = originals(cell, "U")[1]
    assert p.relative and float(p.raw_alpha(m)) == pytest.approx(0.25 * float(m.abs().max()), rel=1e-5)
    with torch.no_grad():  # scaling the whole spectrum moves no rank: only s does
        rank = p.rank_of(m)
        m.mul_(7.0)
    assert p.rank_of(m) == rank


def test_relative_right_inverse_reproduces_the_dense_weight():
    torch.manual_seed(0)
    layer = nn.Linear(9, 7)
    dense = layer.weight.detach().clone()
    strrnn.lowrank(layer, factors="orthogonal", relative=True, s_init=math.log(0.05))
    assert torch.allclose(layer.weight, dense, atol=1e-5)  # the soft threshold is undone at step 0


def test_the_threshold_learns_from_the_loss_and_moves():
    # the loss alone (no decay at all) gives s a gradient through the soft threshold: a larger threshold shrinks
    # every kept singular value, which the loss resists
    model = _model(s_init=math.log(0.3))
    opt = torch.optim.Adam(strrnn.param_groups(model, weight_decay=0.0, threshold_decay=0.0), lr=3e-3)
    x, y = _data()
    F.cross_entropy(model(x), y).backward()
    grads = [float(s.grad) for s in _thresholds(model)]
    assert all(g != 0.0 and math.isfinite(g) for g in grads)
    before = [float(s) for s in _thresholds(model)]
    _train(model, None, opt, 20)
    after = [float(s) for s in _thresholds(model)]
    assert all(a != b for a, b in zip(after, before))


def test_a_larger_decay_learns_smaller_ranks(one_thread):
    ranks = []
    for decay in (0.0, 0.03, 0.3, 3.0):
        model = _model(s_init=-1.5)
        opt = _optimizer(model, decay)
        recipe = strrnn.STRRecipe(model, opt, total_steps=60, freeze_at=1.0)
        _train(model, recipe, opt, 60)
        ranks.append(sum(recipe.ranks().values()))
    assert ranks[0] > ranks[1] > ranks[2] > ranks[3], ranks  # measured: 18, 16, 8, 5


def test_freeze_releases_into_plain_factors_resets_their_state_and_restarts_the_lr(one_thread):
    model = _model(s_init=-2.0)
    opt = _optimizer(model)
    recipe = strrnn.STRRecipe(model, opt, total_steps=20, freeze_at=0.5)
    lr = torch.optim.lr_scheduler.LambdaLR(opt, recipe.lr_lambda)
    x, y = _data()
    cell = model.rnn.cells[0]
    rates = []
    for step in range(20):
        _optimizer_step(model, opt, x, y, step)
        if step == 8:
            assert all(t in opt.state for t in originals(cell, "U"))
            learned = recipe.ranks()
        recipe.step()
        if step == 9:  # step 10 = freeze_at: frozen and released at the ranks STR learned
            assert recipe.done and recipe.frozen_at == 10
            assert all(t not in opt.state for t in originals(cell, "U"))
            assert all(cell.parametrizations[n][0].is_released for n in ("W", "U"))
            assert recipe.ranks() == {k: max(r, 1) for k, r in learned.items()}
        lr.step()
        rates.append(opt.param_groups[0]["lr"])
    assert rates[9] == pytest.approx(3e-3) and rates[8] < rates[0]  # a new cycle at the freeze
    A, _, B = originals(cell, "U")
    p = cell.parametrizations["U"][0]
    assert torch.allclose(cell.U, (A * p.release_mask) @ B, atol=1e-6)


def test_decay_warmup_ramps_the_threshold_decay_from_zero(one_thread):
    model = _model()
    opt = _optimizer(model, decay=2.0)
    recipe = strrnn.STRRecipe(model, opt, total_steps=20, decay_warmup=0.5, freeze_at=1.0)
    group = threshold_group(opt)
    assert group["weight_decay"] == 0.0  # the first step already sees the ramp's start
    for _ in range(5):
        recipe.step()
    assert group["weight_decay"] == pytest.approx(1.0)
    for _ in range(10):
        recipe.step()
    assert group["weight_decay"] == pytest.approx(2.0)


def test_paper_recipe_never_freezes(one_thread):
    model = _model(factors="free", relative=False)
    opt = torch.optim.Adam(strrnn.param_groups(model, weight_decay=1e-3), lr=1e-3)
    recipe = strrnn.STRRecipe(model, opt, total_steps=10, freeze_at=None)
    _train(model, recipe, opt, 10)
    assert not recipe.done and recipe.restart_step is None
    assert not any(cell.parametrizations[n][0].is_released for cell in model.rnn.cells for n in ("W", "U"))


def test_target_params_is_met_by_the_learned_ranks(one_thread):
    model = _model(s_init=-1.5)
    opt = _optimizer(model, decay=0.03)
    recipe = strrnn.STRRecipe(model, opt, total_steps=150, freeze_at=0.8, target_params=100)  # dense: 72 + 144
    start_decay = recipe.decay
    _train(model, recipe, opt, 150)
    assert recipe.done and recipe.params() <= 100 and recipe.frozen_at < 120
    assert recipe.budget_met_by_str is True  # STR's own thresholds reached the budget, nothing was cut by magnitude
    assert recipe.decay > start_decay  # the controller raised λ while the model was behind the budget path


def test_an_unreached_budget_is_cut_to_at_the_freeze(one_thread):
    model = _model()
    opt = _optimizer(model, decay=0.0)
    recipe = strrnn.STRRecipe(model, opt, total_steps=4, freeze_at=0.5, target_params=100)
    _train(model, recipe, opt, 4)
    assert recipe.done and recipe.params() <= 100 and recipe.budget_met_by_str is False


def test_target_ranks_are_met_exactly(one_thread):
    model = _model()
    opt = _optimizer(model, decay=0.5)
    targets = {"rnn.cells.0.W": 2, "rnn.cells.0.U": 5}
    recipe = strrnn.STRRecipe(model, opt, total_steps=30, freeze_at=0.5, target_ranks=targets)
    _train(model, recipe, opt, 30)
    assert recipe.done and recipe.ranks() == targets


def test_state_dict_resumes_identically(one_thread):
    def run(split: int | None):
        model = _model(seed=3, s_init=-4.0)
        opt = _optimizer(model, decay=0.3)
        recipe = strrnn.STRRecipe(model, opt, total_steps=16, freeze_at=0.5, target_params=150)
        if split is None:
            _train(model, recipe, opt, 16)
            return model
        _train(model, recipe, opt, split)
        state = {"model": model.state_dict(), "opt": opt.state_dict(), "recipe": recipe.state_dict()}
        fresh = _model(seed=99, s_init=-4.0)
        fresh.load_state_dict(state["model"])
        opt2 = _optimizer(fresh, decay=0.3)
        opt2.load_state_dict(state["opt"])
        recipe2 = strrnn.STRRecipe(fresh, opt2, total_steps=16, freeze_at=0.5, target_params=150)
        recipe2.load_state_dict(state["recipe"])
        x, y = _data()
        for step in range(split, 16):
            _optimizer_step(fresh, opt2, x, y, step)
            recipe2.step()
        return fresh

    reference = run(None)
    for split in (3, 12):  # before and after the freeze
        resumed = run(split)
        for (name, a), (_, b) in zip(reference.state_dict().items(), resumed.state_dict().items()):
            assert torch.allclose(a.float(), b.float(), atol=1e-6), (split, name)


def test_bad_use_is_refused():
    with pytest.raises(ValueError, match="no low-rank STR tensor"):
        strrnn.STRRecipe(nn.Linear(3, 3), None, total_steps=10)
    model = _model()
    with pytest.raises(ValueError, match="freeze_at"):
        strrnn.STRRecipe(model, None, total_steps=10, freeze_at=1.5)
    with pytest.raises(ValueError, match="needs a freeze point"):
        strrnn.STRRecipe(model, _optimizer(model), total_steps=10, freeze_at=None, target_params=100)
    with pytest.raises(ValueError, match="strrnn.param_groups"):
        strrnn.STRRecipe(model, None, total_steps=10, target_params=100)
    with pytest.raises(ValueError, match="below what min_rank keeps"):
        strrnn.STRRecipe(model, _optimizer(model), total_steps=10, target_params=5)


def test_spectra_keep_the_weights_decay_with_relative_thresholds_and_follow_the_threshold_otherwise():
    relative = {g["name"]: g["weight_decay"] for g in strrnn.param_groups(_model(), 1e-3, threshold_decay=2.0)}
    absolute = {g["name"]: g["weight_decay"]
                for g in strrnn.param_groups(_model(factors="free", relative=False), 1e-3, threshold_decay=2.0)}
    assert relative["spectrum"] == 1e-3 and relative["threshold"] == 2.0
    assert absolute["spectrum"] == 2.0 and absolute["threshold"] == 2.0  # the paper's coupled decay
    explicit = {g["name"]: g["weight_decay"] for g in strrnn.param_groups(_model(), 1e-3, threshold_decay=2.0,
                                                                           spectrum_decay=0.5)}
    assert explicit["spectrum"] == 0.5


def test_runschedule_is_a_deprecated_name_of_spectral_gmp():
    with pytest.warns(FutureWarning, match="SpectralGMP"):
        old = strrnn.RankSchedule(_model(), None, total_steps=10)
    assert isinstance(old, strrnn.SpectralGMP)


def test_debias_fades_the_shrinkage_of_the_kept_entries_then_releases(one_thread):
    model = _model(s_init=-1.5)
    opt = _optimizer(model, decay=0.3)
    recipe = strrnn.STRRecipe(model, opt, total_steps=40, freeze_at=0.25, debias=0.25)
    lr = torch.optim.lr_scheduler.LambdaLR(opt, recipe.lr_lambda)
    cell = model.rnn.cells[0]
    p = cell.parametrizations["U"][0]
    x, y = _data()
    shrinks = []
    for step in range(40):
        _optimizer_step(model, opt, x, y, step)
        if step == 19:  # the fade's last step sets shrink 0: the weight before the release, computed so
            p.set_shrink(0.0)
            before = cell.U.detach().clone()
        recipe.step()
        lr.step()
        shrinks.append(p.shrink)
        if step == 19:  # the release: the same function, now as plain factors
            assert p.is_released and torch.allclose(cell.U, before, atol=1e-5)
    assert recipe.ranks_final_at == 10 and recipe.released_at == 20 and recipe.restart_step == 20
    assert shrinks[:9] == [1.0] * 9 and shrinks[9:19] == pytest.approx([1 - k / 10 for k in range(10)])
    assert shrinks[19:] == [0.0] * 21
    assert cell.parametrizations["W"][0].is_released and strrnn.rank(cell, "W") == recipe.ranks()["rnn.cells.0.W"]


def test_a_kept_entry_loses_shrink_times_the_threshold():
    model = _model(s_init=math.log(0.3))
    cell = model.rnn.cells[0]
    p = cell.parametrizations["U"][0]
    m = originals(cell, "U")[1].detach()
    alpha = float(p.alpha(m))
    soft = p.thresholded(m).detach()
    p.set_shrink(0.25)
    quarter = p.thresholded(m).detach()
    kept = soft != 0
    assert torch.equal(quarter != 0, kept)  # the same entries are cut
    assert torch.allclose(quarter[kept], m[kept] - 0.25 * alpha * torch.sign(m[kept]), atol=1e-6)


def test_shrink_is_checkpointed_with_the_model():
    model = _model()
    p = model.rnn.cells[0].parametrizations["U"][0]
    p.set_shrink(0.25)
    fresh = _model(seed=5)
    fresh.load_state_dict(model.state_dict())
    assert fresh.rnn.cells[0].parametrizations["U"][0].shrink == 0.25
    with pytest.raises(ValueError, match=r"shrink must lie in \[0, 1\]"):
        p.set_shrink(1.5)
    with pytest.raises(ValueError, match="freeze_at"):
        strrnn.STRRecipe(model, None, total_steps=10, freeze_at=0.8, debias=0.3)
