"""``strrnn export --run DIR --onnx FILE [--int8 [FILE]] [--check-accuracy]``: a run's exported model as ONNX,
checked with onnxruntime (library: :mod:`strrnn.deploy.onnx_graph`)."""

from __future__ import annotations

import argparse
import sys

from ..fileio import DiskFullError


def main(argv=None) -> int:
    """``strrnn export``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="strrnn export",
                                     description="ONNX export of a run's exported model, checked with onnxruntime "
                                                 "(no data set needed)")
    parser.add_argument("--run", required=True, help="run folder written by strrnn train")
    parser.add_argument("--onnx", required=True, help="output .onnx file (fp32)")
    parser.add_argument("--int8", nargs="?", const=True, default=False, metavar="FILE",
                        help="also write onnxruntime's dynamic int8 quantization (default file: <onnx>.int8.onnx)")
    parser.add_argument("--check-accuracy", action="store_true",
                        help="score the written model(s) on the run's test split (needs the data set)")
    parser.add_argument("--data-dir", default=None, help="dataset root for --check-accuracy (default: the run's)")
    parser.add_argument("--atol", type=float, default=1e-4, help="largest PyTorch-vs-onnxruntime logit difference")
    args = parser.parse_args(argv)
    if not 0 <= args.atol < float("inf"):  # also NaN: say so before seconds of imports and tracing
        parser.exit(2, f"strrnn export: error: --atol must be a finite number >= 0, got {args.atol}\n")
    from ..data import DataError  # torch and onnx: not needed for --help
    from ..deploy.onnx_graph import export_onnx, onnx_accuracy

    prog = "strrnn export"
    try:
        result = export_onnx(args.run, args.onnx, int8=args.int8, atol=args.atol)
    except (ValueError, DataError, DiskFullError, OSError) as err:  # OSError: a write that failed midway
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    shape = "x".join(map(str, result.input_shape))
    print(f"wrote {result.onnx}; onnxruntime matches PyTorch to {result.max_abs_diff:.2e} on random inputs of shape "
          f"batch x {shape}")
    print(f"weights: {result.size['fp32_kb']:.2f} KB at fp32, {result.size['int8_kb']:.2f} KB at int8 "
          "(strrnn.model_size; the .onnx files also hold the graph)")
    if result.int8 is not None:
        print(f"wrote {result.int8} (int8 weights); its top class equals the fp32 model's on "
              f"{100 * result.int8_agreement:.0f}% of the random inputs")
    if args.check_accuracy:
        files = {"fp32": result.onnx, **({"int8": result.int8} if result.int8 is not None else {})}
        try:
            accuracy, n = onnx_accuracy(args.run, files, args.data_dir)
        except (ValueError, DataError) as err:
            print(f"{prog}: error: --check-accuracy: {err}", file=sys.stderr)
            return 2
        line = ", ".join(f"{name} {acc:.4f}" for name, acc in accuracy.items())
        print(f"test accuracy on {n} examples: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
