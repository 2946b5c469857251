"""Export a trained STR model to plain modules with no strrnn parametrization left.

* A low-rank ``nn.Linear`` becomes a :class:`strrnn.lowrank.LowRankLinear` holding the rank-``r`` factors
  (cut spectrum entries dropped, the kept spectrum folded into the left factor), where that is smaller than
  the dense weight; otherwise a plain ``nn.Linear`` with the materialized weight.
* Any other module with a low-rank tensor: if it defines ``export_low_rank(name, left, right)`` (the recurrent
  cells do), it receives the factors and computes with them; otherwise the weight is materialized densely.
* Unstructured tensors are written back as dense tensors with exact zeros.

The exported model computes the same outputs as the trained one (to float tolerance) and round-trips through
``torch.save(model.state_dict())`` / ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import copy
import os

import torch
from torch import nn
from torch.nn.utils import parametrize

from .lowrank import LowRankLinear, LowRankSTR, _originals
from .report import iter_str_tensors, low_rank_params

__all__ = ["export", "has_str"]


def has_str(model: nn.Module) -> bool:
    """Whether any tensor of ``model`` still carries an STR parametrization."""
    return any(True for _ in iter_str_tensors(model))


def _set_submodule(root: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, child = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, child, new)


@torch.no_grad()
def _kept_factors(module: nn.Module, name: str, p: LowRankSTR) -> tuple[torch.Tensor, torch.Tensor]:
    left, spec, right = p.factors(*_originals(module, name))
    keep = spec != 0
    return (left[:, keep] * spec[keep]).contiguous(), right[keep].contiguous()


def _materialize(module: nn.Module, name: str) -> None:
    """Remove the parametrization of ``module.<name>``, leaving its current value as a plain Parameter.

    ``remove_parametrizations`` registers the value as a *buffer* when it does not require grad — which is
    every tensor under ``torch.no_grad()``; an exported weight must stay a Parameter either way.
    """
    with torch.enable_grad():
        parametrize.remove_parametrizations(module, name, leave_parametrized=True)
    if name in module._buffers:
        value = module._buffers.pop(name)
        module.register_parameter(name, nn.Parameter(value, requires_grad=False))


def export(model: nn.Module) -> nn.Module:
    """Return a deep copy of ``model`` with every STR parametrization removed (see the module docstring).

    ``model`` itself is left untouched. The copy is in the same train/eval mode as ``model``.
    """
    exported = copy.deepcopy(model)
    for module in exported.modules():
        if parametrize.is_parametrized(module):
            # parametrize injects tensor properties into a class that deepcopy shares with the original;
            # removing them from the copy's class would break `model`, so give the copy a class of its own.
            cls = module.__class__
            module.__class__ = type(cls.__name__, cls.__bases__, dict(cls.__dict__))
    # Collect first: exporting replaces modules and parametrizations while we iterate.
    for path, module, name, p in list(iter_str_tensors(exported)):
        if isinstance(p, LowRankSTR):
            left, right = _kept_factors(module, name, p)
            _materialize(module, name)
            out_features, in_features = p.matrix_shape
            factored_is_smaller = low_rank_params(out_features, in_features, left.shape[1]) < (
                out_features * in_features
            )
            if isinstance(module, nn.Linear) and name == "weight" and factored_is_smaller:
                replacement = LowRankLinear.from_factors(left, right, module.bias).train(module.training)
                if not path:  # the model itself is the layer
                    return replacement
                _set_submodule(exported, path, replacement)
            elif hasattr(module, "export_low_rank") and factored_is_smaller:
                module.export_low_rank(name, left, right)
        else:
            _materialize(module, name)
    return exported


def export_onnx(run_dir, onnx_path, data_dir: str | None = None, atol: float = 1e-4, batches: int = 2) -> float:
    """Write the exported model of ``run_dir`` to ONNX and check it with onnxruntime on real test inputs.

    Returns the largest absolute difference between PyTorch and onnxruntime logits.

    Raises:
        ValueError: the difference exceeds ``atol`` (the ONNX file is then removed).
    """
    import warnings
    from pathlib import Path

    import numpy as np
    import onnxruntime

    from .runs import build_datamodule, load_exported

    onnx_path = Path(onnx_path)
    if onnx_path.is_dir():
        raise ValueError(f"--onnx {onnx_path} is a folder; give a file name, e.g. {onnx_path / 'model.onnx'}")
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    model, payload = load_exported(run_dir)
    config = dict(payload["config"], normalization=payload.get("normalization"), synthetic=False)
    if data_dir:
        config["data_dir"] = data_dir
    datamodule = build_datamodule(config)
    datamodule.setup("test")
    loader = iter(datamodule.test_dataloader())
    example = next(loader)[0]
    tmp = onnx_path.with_name(onnx_path.name + ".tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        torch.onnx.export(model, (example,), str(tmp), dynamo=False, input_names=["features"],
                          output_names=["logits"], dynamic_axes={"features": {0: "batch"}, "logits": {0: "batch"}})
    session = onnxruntime.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
    worst = 0.0
    inputs = [example] + [batch[0] for _, batch in zip(range(batches - 1), loader)]
    with torch.no_grad():
        for x in inputs:
            expected = model(x).numpy()
            got = session.run(None, {"features": x.numpy()})[0]
            worst = max(worst, float(np.abs(expected - got).max()))
    if worst > atol:
        tmp.unlink(missing_ok=True)
        raise ValueError(f"ONNX output differs from PyTorch by {worst:.3g} > {atol}; not written")
    os.replace(tmp, onnx_path)
    return worst


def main(argv=None) -> int:
    """``python -m strrnn.export --run DIR --onnx FILE``."""
    import argparse
    import sys

    from .data import DataError

    parser = argparse.ArgumentParser(prog="python -m strrnn.export",
                                     description="ONNX export of a run's exported model, checked with onnxruntime")
    parser.add_argument("--run", required=True, help="run folder written by python -m strrnn.train")
    parser.add_argument("--onnx", required=True, help="output .onnx file")
    parser.add_argument("--data-dir", default=None, help="dataset root for the check inputs (default: the run's)")
    parser.add_argument("--atol", type=float, default=1e-4)
    args = parser.parse_args(argv)
    try:
        worst = export_onnx(args.run, args.onnx, args.data_dir, args.atol)
    except (ValueError, DataError) as err:
        print(f"python -m strrnn.export: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.onnx}; onnxruntime matches PyTorch to {worst:.2e} on real test inputs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
