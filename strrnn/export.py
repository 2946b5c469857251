"""ONNX export of a run's exported model, checked with onnxruntime: ``python -m strrnn.export --run DIR --onnx F``.

This module is the command line; the library function is :func:`strrnn.export` (module :mod:`strrnn.exporting`).
Importing this module keeps ``strrnn.export(model)`` working: the module object itself is callable and delegates
to that function (Python binds a submodule to its package's attribute of the same name on import).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from .callable_module import make_callable
from .data import DataError
from .exporting import export
from .fileio import atomic_path
from .runs import build_datamodule, load_exported

__all__ = ["export_onnx", "main"]


def export_onnx(run_dir, onnx_path, data_dir: str | None = None, atol: float = 1e-4, batches: int = 2) -> float:
    """Write the exported model of ``run_dir`` to ONNX and check it with onnxruntime on real test inputs.

    Returns the largest absolute difference between PyTorch and onnxruntime logits.

    Raises:
        ValueError: the difference exceeds ``atol`` (the ONNX file is then removed).
    """
    try:
        import onnxruntime
    except ImportError:
        raise ValueError("ONNX export needs onnx and onnxruntime: pip install onnx onnxruntime") from None

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
    with atomic_path(onnx_path) as tmp:  # written only once onnxruntime agrees with PyTorch
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
            torch.onnx.export(model, (example,), str(tmp), dynamo=False, input_names=["features"],
                              output_names=["logits"],
                              dynamic_axes={"features": {0: "batch"}, "logits": {0: "batch"}})
        session = onnxruntime.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        worst = 0.0
        inputs = [example] + [batch[0] for _, batch in zip(range(batches - 1), loader)]
        with torch.no_grad():
            for x in inputs:
                expected = model(x).numpy()
                got = session.run(None, {"features": x.numpy()})[0]
                worst = max(worst, float(np.abs(expected - got).max()))
        if worst > atol:
            raise ValueError(f"ONNX output differs from PyTorch by {worst:.3g} > {atol}; not written")
    return worst


def main(argv=None) -> int:
    """``python -m strrnn.export --run DIR --onnx FILE``."""
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


make_callable(__name__, export)  # `import strrnn.export` must not turn strrnn.export(model) into an error

if __name__ == "__main__":
    raise SystemExit(main())
