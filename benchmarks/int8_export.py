"""Int8 export: model size and test accuracy of finished runs' ONNX models at fp32 and at int8.

    python -m benchmarks.int8_export benchmarks/results/rank_vs_accuracy/100ep/str-0.6-s0 \\
        benchmarks/results/rank_vs_accuracy/100ep/dense-s0
    python -m benchmarks.int8_export RUN... --out /tmp/int8     # ONNX files and table.md/table.csv there

For every run folder (one written by ``python -m strrnn.train``) this exports the fp32 ONNX model and
onnxruntime's dynamic int8 quantization of it (``strrnn export --int8``: QInt8 weights, one scale per
tensor, activations quantized on the fly) and scores both on the run's test split (the run's data set must be
there; ``--data-dir`` names another root of it). Columns: the weights' storage (``strrnn.model_size``: fp32 and
int8 KB), the ``.onnx`` files' sizes (weights plus graph: a recurrent model's time loop is unrolled over its
frames, so the graph dominates small recurrent models), the run's own test accuracy (PyTorch, from
``summary.json``), the number of test examples and the fp32 and int8 ONNX accuracies, with the drop in points.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from benchmarks import RESULTS
from strrnn.deploy.onnx_graph import export_onnx, onnx_accuracy
from strrnn.fileio import atomic_write_text

COLUMNS = ["run", "dataset", "mode", "cell", "params", "fp32_kb", "int8_kb", "onnx_fp32_kb", "onnx_int8_kb",
           "test_acc", "n_test", "fp32_acc", "int8_acc", "drop_points"]


def measure(run_dir: Path, out: Path, data_dir: str | None = None) -> dict:
    """One table row for ``run_dir``: export to ``out/<run name>{,.int8}.onnx`` and score both on the test split."""
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").is_file() else {}
    result = export_onnx(run_dir, out / f"{run_dir.name}.onnx", int8=True)
    accuracy, n_test = onnx_accuracy(run_dir, {"fp32": result.onnx, "int8": result.int8}, data_dir)
    return {
        "run": run_dir.name, "dataset": summary.get("dataset"), "mode": summary.get("mode"),
        "cell": summary.get("cell"), "params": summary.get("params_exported"),
        "fp32_kb": result.size["fp32_kb"], "int8_kb": result.size["int8_kb"],
        "onnx_fp32_kb": result.onnx.stat().st_size / 1024, "onnx_int8_kb": result.int8.stat().st_size / 1024,
        "test_acc": summary.get("test_acc"), "n_test": n_test,
        "fp32_acc": accuracy["fp32"], "int8_acc": accuracy["int8"],
        "drop_points": 100 * (accuracy["fp32"] - accuracy["int8"]),
    }


def main(argv: list[str] | None = None) -> None:
    """Measure every run given and print (and write) the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="finished run folders")
    parser.add_argument("--out", type=Path, default=RESULTS / "int8_export",
                        help="folder for the ONNX files and table.md/table.csv (default: %(default)s)")
    parser.add_argument("--data-dir", default=None, help="dataset root for the accuracies (default: each run's)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame([measure(run, args.out, args.data_dir) for run in args.runs], columns=COLUMNS)
    text = table.to_markdown(index=False, floatfmt=".4g")
    atomic_write_text(args.out / "table.md", text + "\n")
    atomic_write_text(args.out / "table.csv", table.to_csv(index=False))
    print(text)
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
