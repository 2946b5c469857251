"""Parameter and FLOP accounting for CNNs, by the STR paper's rule (docs/MATH.md, "Budget accounting").

- Parameters: nonzero conv/linear weights (biases and batch-norm excluded).
- FLOPs: one multiply-add = one FLOP; a conv/linear layer costs ``weights × output positions``
  dense, times its density after pruning; batch-norm, ReLU, max-pool and additions are free; the
  average pool costs one FLOP per input element.

Dense torchvision ResNet-50 at 224×224: 25,502,912 parameters and 4,089,284,608 FLOPs.
Sparsity is read from the *effective* weight (``module.weight``), so models carrying an STR
parametrization (``strrnn.sparsify``), a GMP mask or a DNW top-k parametrization are counted
after thresholding, and so are exported models with exact zeros.
"""

from __future__ import annotations

import pandas as pd
import torch
from torch import nn

__all__ = ["COLUMNS", "profile", "summary"]

COLUMNS = ["layer", "kind", "params", "flops", "params_dense", "flops_dense", "density"]

_POOLS = (
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
)
_COUNTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _output_positions(module: nn.Module, output: torch.Tensor) -> int:
    """How often each weight is used per sample: a conv output's spatial size, a linear's leading dims."""
    if isinstance(module, nn.Linear):
        # Linear applies to the last dim; everything between the batch and the feature dim repeats it
        return int(output[0].numel() // output.shape[-1]) if output.dim() > 1 else 1
    return int(output[0, 0].numel())


@torch.no_grad()
def profile(model: nn.Module, input_shape: tuple[int, ...] = (3, 224, 224)) -> pd.DataFrame:
    """Per-layer parameters and FLOPs of ``model`` for one sample of shape ``input_shape`` (no batch dim).

    Runs one forward pass in eval mode on a zero tensor of shape ``(1, *input_shape)`` (on the model's
    device and dtype; the training mode is restored afterwards) with hooks on every Conv/Linear and
    average-pool module.

    Returns a DataFrame with one row per conv/linear layer, in execution order — ``layer`` (module
    path), ``kind`` (class name), ``params`` and ``flops`` (after sparsity: nonzero weights),
    ``params_dense`` and ``flops_dense``, ``density`` (params / params_dense) — and a last row whose
    ``layer`` is ``"total"`` whose FLOPs include the average pool(s). A layer run twice is counted twice.
    """
    records: list[dict] = []
    pool_flops = [0]
    handles = []

    def conv_or_linear_hook(name: str):
        def hook(module: nn.Module, inputs, output: torch.Tensor) -> None:
            weight = module.weight  # the effective weight when a parametrization is registered
            params_dense = weight.numel()
            params = int(torch.count_nonzero(weight))
            positions = _output_positions(module, output)
            records.append(
                {
                    "layer": name,
                    "kind": type(module).__name__.removeprefix("Parametrized"),
                    "params": params,
                    "flops": params * positions,
                    "params_dense": params_dense,
                    "flops_dense": params_dense * positions,
                }
            )

        return hook

    def pool_hook(module: nn.Module, inputs, output: torch.Tensor) -> None:
        pool_flops[0] += int(inputs[0][0].numel())

    for name, module in model.named_modules():
        if isinstance(module, _COUNTED):
            handles.append(module.register_forward_hook(conv_or_linear_hook(name)))
        elif isinstance(module, _POOLS):
            handles.append(module.register_forward_hook(pool_hook))

    reference = next(iter(model.parameters()), None)
    device = reference.device if reference is not None else torch.device("cpu")
    dtype = reference.dtype if reference is not None and reference.is_floating_point() else torch.float32
    was_training = model.training
    model.eval()
    try:
        model(torch.zeros((1, *input_shape), device=device, dtype=dtype))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()

    if not records:
        raise ValueError(f"{type(model).__name__} has no Conv/Linear layer that ran on input {input_shape}")
    table = pd.DataFrame.from_records(records)
    total = {
        "layer": "total",
        "kind": "",
        "params": int(table["params"].sum()),
        "flops": int(table["flops"].sum()) + pool_flops[0],
        "params_dense": int(table["params_dense"].sum()),
        "flops_dense": int(table["flops_dense"].sum()) + pool_flops[0],
    }
    table = pd.concat([table, pd.DataFrame([total])], ignore_index=True)
    table["density"] = table["params"] / table["params_dense"]
    return table[COLUMNS]


def summary(model: nn.Module, input_shape: tuple[int, ...] = (3, 224, 224)) -> dict[str, float]:
    """The total row of :func:`profile` as a dict: ``params``, ``flops``, ``params_dense``, ``flops_dense``,
    ``density`` and ``sparsity`` (percent of weights that are zero)."""
    total = profile(model, input_shape).iloc[-1]
    return {
        "params": int(total["params"]),
        "flops": int(total["flops"]),
        "params_dense": int(total["params_dense"]),
        "flops_dense": int(total["flops_dense"]),
        "density": float(total["density"]),
        "sparsity": 100.0 * (1.0 - float(total["density"])),
    }
