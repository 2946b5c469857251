"""Parameter/FLOP accounting (docs/MATH.md, "Budget accounting") and the CNN model registry."""

import pytest
import torch

import strrnn
from cnn import flops, models


def _make_all_weights_nonzero(model: torch.nn.Module) -> None:
    # random init can draw an exact 0.0 now and then; the paper's dense count assumes none
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.where(parameter == 0, torch.full_like(parameter, 1e-3), parameter))


def test_resnet50_dense_params_and_flops_are_exact():
    model = models.build("resnet50", 1000)
    _make_all_weights_nonzero(model)
    table = flops.profile(model, (3, 224, 224))
    total = table.iloc[-1]
    assert total["layer"] == "total"
    assert total["params_dense"] == 25_502_912
    assert total["flops_dense"] == 4_089_284_608
    assert total["params"] == 25_502_912
    assert total["flops"] == 4_089_284_608
    assert len(table) == 54 + 1  # 53 convs + fc, as the paper's 54 thresholds
    fc = table[table["layer"] == "fc"].iloc[0]
    assert (fc["params"], fc["flops"]) == (2_048_000, 2_048_000)


def test_mobilenetv1_dense_params_and_flops_to_three_digits():
    model = models.build("mobilenetv1", 1000)
    total = flops.profile(model, (3, 224, 224)).iloc[-1]
    assert f"{total['params_dense'] / 1e6:.2f}" == "4.21"
    assert f"{total['flops_dense'] / 1e6:.0f}" == "569"
    half = flops.profile(models.build("mobilenetv1", 1000, width_mult=0.5), (3, 224, 224)).iloc[-1]
    assert half["params_dense"] < 0.4 * total["params_dense"]


def test_profile_counts_nonzeros_of_str_parametrized_weights():
    torch.manual_seed(0)
    model = models.build("small_cnn", 10, channels=(8, 16))
    strrnn.sparsify(model)  # right_inverse keeps the dense weight at registration...
    with torch.no_grad():  # ...so raise every threshold afterwards: alpha = sigmoid(-3) ≈ 0.047
        for module in model.modules():
            if isinstance(module, strrnn.Threshold):
                module.s.fill_(-3.0)
    table = flops.profile(model, (1, 28, 28))
    layers = dict(model.named_modules())
    for row in table.iloc[:-1].itertuples():
        weight = layers[row.layer].weight
        nonzeros = int(torch.count_nonzero(weight))
        assert row.params == nonzeros
        assert row.params_dense == weight.numel()
        assert row.flops * weight.numel() == row.flops_dense * nonzeros  # FLOPs scale with density
    total = table.iloc[-1]
    assert 0 < total["params"] < total["params_dense"]
    # the exported model (exact zeros, no parametrization) is counted the same way
    exported = flops.profile(strrnn.export(model), (1, 28, 28))
    assert exported[["params", "flops"]].equals(table[["params", "flops"]])
    # and the total row agrees with strrnn.report's count
    assert strrnn.report(model).iloc[-1]["params"] == total["params"]


def test_average_pool_is_added_to_the_total():
    model = models.build("small_cnn", 10, channels=(4,))
    table = flops.profile(model, (1, 8, 8))
    assert table.iloc[-1]["flops_dense"] == table.iloc[:-1]["flops_dense"].sum() + 4 * 8 * 8


@pytest.mark.parametrize(
    "name, kwargs, shape",
    [
        ("small_cnn", {}, (1, 8, 8)),
        ("small_cnn", {}, (1, 28, 28)),
        ("spectrogram_cnn", {}, (1, 99, 32)),
        ("resnet18", {"small_input": True}, (3, 64, 64)),
        ("mobilenetv1", {"width_mult": 0.25}, (3, 64, 64)),
    ],
)
def test_models_map_images_to_logits(name, kwargs, shape):
    model = models.build(name, 7, **kwargs)
    assert model(torch.randn(2, *shape)).shape == (2, 7)


def test_unknown_model_lists_choices():
    with pytest.raises(ValueError, match="resnet50") as error:
        models.build("resnet51", 10)
    assert "mobilenetv1" in str(error.value) and "resnet51" in str(error.value)
    assert set(models.INPUT_SHAPES) == set(models.available())
