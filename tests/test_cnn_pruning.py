"""GMP schedule, DNW, one-shot magnitude pruning, budgets (uniform, ERK, from report.csv)."""

import math

import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from cnn import budget, flops, models, pruning

pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return models.build("small_cnn", 4, channels=(8, 16))


def _train_steps(model, scheduler, steps, on_step=None):
    """A plain loop on random data: GMP's step() before each forward, as documented."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    generator = torch.Generator().manual_seed(1)
    for step in range(steps):
        scheduler.step(step)
        if on_step is not None:
            on_step(step)
        images = torch.randn(8, 1, 8, 8, generator=generator)
        labels = torch.randint(0, 4, (8,), generator=generator)
        loss = nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def test_cubic_schedule_matches_zhu_and_gupta():
    assert pruning.cubic_sparsity(0, 0.9, 10, 110) == 0.0
    assert pruning.cubic_sparsity(10, 0.9, 10, 110) == 0.0
    assert pruning.cubic_sparsity(60, 0.9, 10, 110) == pytest.approx(0.9 * (1 - 0.5**3))
    assert pruning.cubic_sparsity(110, 0.9, 10, 110) == pytest.approx(0.9)
    assert pruning.cubic_sparsity(10_000, 0.9, 10, 110) == pytest.approx(0.9)
    values = [pruning.cubic_sparsity(t, 0.8, 0, 100, initial_sparsity=0.2) for t in range(0, 101, 10)]
    assert values[0] == pytest.approx(0.2) and values[-1] == pytest.approx(0.8)
    assert all(b >= a for a, b in zip(values, values[1:], strict=False))


def test_gmp_reaches_target_sparsity_on_schedule():
    model = _tiny_model()
    targets = {"features.0.0": 0.5, "features.1.0": 0.9, "classifier": 0.75}
    scheduler = pruning.GMPScheduler(model, targets, begin_step=5, end_step=45, frequency=10)
    seen, previous_masks = {}, {}

    def record(step):
        seen[step] = pruning.layer_sparsity(model, include=list(targets))
        for name, mask in scheduler.masks.items():
            if name in previous_masks:  # masks only shrink: once pruned, a weight stays pruned
                assert torch.all(mask.mask <= previous_masks[name])
            previous_masks[name] = mask.mask.clone()

    _train_steps(model, scheduler, 60, on_step=record)
    layers = dict(model.named_modules())
    for step, measured in seen.items():
        last_update = step if step < 5 else min(5 + 10 * ((step - 5) // 10), 45)
        for name, final in targets.items():
            numel = layers[name].weight.numel()
            expected = round(numel * pruning.cubic_sparsity(last_update, final, 5, 45)) / numel
            assert measured[name] == pytest.approx(expected, abs=1e-9), (step, name)
    for name, final in targets.items():  # the final sparsity, held after end_step
        numel = layers[name].weight.numel()
        assert seen[59][name] == pytest.approx(round(numel * final) / numel, abs=1e-9)
    assert scheduler.last_update == 45
    assert flops.summary(model, (1, 8, 8))["sparsity"] > 80.0


def test_gmp_hits_the_final_step_even_off_the_frequency_grid():
    model = _tiny_model()
    scheduler = pruning.GMPScheduler(model, 0.8, begin_step=0, end_step=25, frequency=10)
    _train_steps(model, scheduler, 30)
    for name, value in pruning.layer_sparsity(model).items():
        numel = dict(model.named_modules())[name].weight.numel()
        assert value == pytest.approx(round(0.8 * numel) / numel), name


class _TinyClassifier(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.model = _tiny_model()

    def training_step(self, batch, batch_idx):
        images, labels = batch
        return nn.functional.cross_entropy(self.model(images), labels)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


@pytest.mark.parametrize(
    "schedule, run_length",
    [
        ({"begin_step": 0, "end_step": 12, "frequency": 4}, {"max_steps": 16}),
        ({"frequency": 2}, {"max_epochs": 2}),
    ],  # default: 5%–75% of the run's 16 steps
)
def test_gmp_callback_prunes_inside_lightning(tmp_path, schedule, run_length):
    images, labels = torch.randn(64, 1, 8, 8), torch.randint(0, 4, (64,))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels), batch_size=8)
    report = pd.DataFrame(
        {
            "module": ["features.0.0", "features.1.0", "classifier", "total"],
            "tensor": ["weight", "weight", "weight", ""],
            "mode": ["unstructured"] * 3 + [""],
            "sparsity": [40.0, 92.5, 70.0, 88.0],
        }
    )
    report.to_csv(tmp_path / "report.csv", index=False)
    callback = pruning.GMPCallback(str(tmp_path), **schedule)
    module = _TinyClassifier()
    trainer = pl.Trainer(
        **run_length,
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        default_root_dir=tmp_path,
    )
    trainer.fit(module, loader)
    assert callback.scheduler.end_step == 12
    measured = pruning.layer_sparsity(module.model)
    for name, percent in [("features.0.0", 40.0), ("features.1.0", 92.5), ("classifier", 70.0)]:
        assert 100 * measured[name] == pytest.approx(percent, abs=0.5), name
    # the masks are in the state dict, so checkpoints carry them
    assert any(key.endswith("parametrizations.weight.0.mask") for key in module.state_dict())


def test_dnw_keeps_top_k_and_passes_gradients_straight_through():
    torch.manual_seed(0)
    layer = nn.Linear(20, 10)
    dense = layer.weight.detach().clone()
    pruning.apply_dnw(nn.Sequential(layer), 0.7)
    weight = layer.weight
    assert int(torch.count_nonzero(weight)) == 60
    kept = weight != 0
    assert dense.abs()[kept].min() >= dense.abs()[~kept].max()
    (layer(torch.ones(3, 20)).sum()).backward()
    gradient = layer.parametrizations.weight.original.grad
    assert torch.all(gradient[~kept] != 0)  # straight-through: pruned weights still learn
    folded = pruning.fold_masks(nn.Sequential(layer))
    assert int(torch.count_nonzero(folded[0].weight)) == 60
    assert not hasattr(folded[0], "parametrizations")


def test_one_shot_uniform_magnitude_pruning_and_fold():
    model = _tiny_model()
    pruning.apply_magnitude_pruning(model, 0.6, exclude=["classifier"])
    measured = pruning.layer_sparsity(model)
    assert measured["classifier"] == 0.0
    assert measured["features.0.0"] == pytest.approx(round(0.6 * 72) / 72)
    inputs = torch.randn(2, 1, 8, 8)
    model.eval()
    before = model(inputs)
    pruning.fold_masks(model)
    assert torch.equal(model(inputs), before)
    assert pruning.layer_sparsity(model)["features.1.0"] == pytest.approx(0.6, abs=1e-3)


def test_erk_budget_meets_overall_sparsity_and_favours_small_layers():
    model = models.build("resnet18", 1000)
    erk = budget.erk_budget(model, 0.9)
    assert budget.global_sparsity(model, erk) == pytest.approx(0.9, abs=1e-6)
    assert erk["conv1"] < erk["layer4.1.conv2"]  # the 7×7×3 stem is small: pruned less
    assert all(0.0 <= value < 1.0 for value in erk.values())
    uniform = budget.uniform_budget(model, 0.5, exclude=["conv1", "fc"])
    assert "conv1" not in uniform and "fc" not in uniform and set(uniform.values()) == {0.5}
    assert "layer1.0.conv1" in budget.uniform_budget(model, 0.5, include=["layer1.*"])


def test_load_budget_converts_percent_and_rejects_bad_tables(tmp_path):
    table = pd.DataFrame(
        {
            "module": ["conv", "fc", "rnn", "total"],
            "tensor": ["weight", "weight", "W", ""],
            "mode": ["unstructured", "unstructured", "lowrank", ""],
            "sparsity": [85.0, 12.5, math.nan, 80.0],
        }
    )
    assert budget.load_budget(table) == {"conv": 0.85, "fc": 0.125}
    with pytest.raises(FileNotFoundError, match="report.csv"):
        budget.load_budget(tmp_path)
    with pytest.raises(ValueError, match="sparsity"):
        budget.load_budget(table.drop(columns="sparsity"))
    with pytest.raises(ValueError, match="fraction"):
        pruning.GMPScheduler(_tiny_model(), {"classifier": 85.0}, 0, 10)


def test_resolve_budget_tolerates_a_wrapper_prefix_and_names_unknown_layers():
    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = _tiny_model()

    wrapper = Wrapper()
    assert budget.resolve_budget(wrapper, {"classifier": 0.5}) == {"model.classifier": 0.5}
    with pytest.raises(ValueError, match="no layer"):
        budget.resolve_budget(wrapper, {"layer9.conv": 0.5})


def test_budget_targets_takes_exactly_one_source(tmp_path):
    model = _tiny_model()
    report = pd.DataFrame(
        {
            "module": ["classifier", "total"],
            "tensor": ["weight", ""],
            "mode": ["unstructured", ""],
            "sparsity": [60.0, 60.0],
        }
    )
    report.to_csv(tmp_path / "report.csv", index=False)
    assert budget.budget_targets(model, budget_from=tmp_path) == {"classifier": 0.6}
    erk = budget.budget_targets(model, sparsity=0.8, distribution="erk")
    assert budget.global_sparsity(model, erk) == pytest.approx(0.8)
    with pytest.raises(ValueError, match="not both"):
        budget.budget_targets(model, budget_from=tmp_path, sparsity=0.5)
    with pytest.raises(ValueError, match="erk"):
        budget.budget_targets(model, sparsity=0.5, distribution="random")
