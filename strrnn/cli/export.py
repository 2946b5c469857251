"""``strrnn export --run DIR --onnx FILE [--int8 [FILE]] [--check-accuracy]``: a run's exported model as ONNX,
checked with onnxruntime (library: :mod:`strrnn.deploy.onnx_graph`).

``strrnn export --run DIR --c FOLDER [--int8] [--scales row|tensor] [--prefix P]``: the same model as
dependency-free C99, checked against PyTorch with the system compiler when there is one (library:
:func:`strrnn.deploy.export_c`). ``--onnx`` and ``--c`` may be given together; at least one is required."""

from __future__ import annotations

import argparse
import sys

from ..fileio import DiskFullError


def main(argv=None) -> int:
    """``strrnn export``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="strrnn export",
                                     description="ONNX and/or C export of a run's exported model, checked against "
                                                 "PyTorch (no data set needed)")
    parser.add_argument("--run", required=True, help="run folder written by strrnn train")
    parser.add_argument("--onnx", default=None,
                        help="output .onnx file (fp32; a recurrent model's step graph is written beside it as "
                             "<name>.step.onnx)")
    parser.add_argument("--c", default=None, metavar="FOLDER",
                        help="output folder for C99 source (<prefix>_model.h, <prefix>_model.c, main.c)")
    parser.add_argument("--int8", nargs="?", const=True, default=False, metavar="FILE",
                        help="ONNX: also write the int8 model (default file: <onnx>.int8.onnx); C: int8 weights and "
                             "integer multiply-accumulate instead of fp32")
    parser.add_argument("--scales", choices=("row", "tensor"), default="row",
                        help="int8 weight scales of a recurrent model: one per matrix row (default) or per matrix")
    parser.add_argument("--prefix", default="kws", help="C: prefix of every public name and file (default: kws)")
    parser.add_argument("--check-accuracy", action="store_true",
                        help="score the written model(s) on the run's test split (needs the data set)")
    parser.add_argument("--data-dir", default=None, help="dataset root for --check-accuracy (default: the run's)")
    parser.add_argument("--atol", type=float, default=1e-3,
                        help="largest logit difference from PyTorch of the ONNX and C models, relative: atol x "
                             "max(1, |logit|) (float32 rounding, summed in another order over 99 recurrent steps)")
    args = parser.parse_args(argv)
    if not 0 <= args.atol < float("inf"):  # also NaN: say so before seconds of imports and tracing
        parser.exit(2, f"strrnn export: error: --atol must be a finite number >= 0, got {args.atol}\n")
    if args.onnx is None and args.c is None:
        parser.error("give --onnx FILE, --c FOLDER, or both")
    if args.onnx is None and args.check_accuracy:
        parser.error("--check-accuracy scores the ONNX files: give --onnx FILE too")
    if args.onnx is None and args.int8 not in (True, False):
        parser.error(f"--int8 {args.int8} names the int8 ONNX file; with --c alone give --int8 without a file")
    from ..data import DataError  # torch and onnx: not needed for --help

    prog = "strrnn export"
    if args.c is not None and (status := _export_c(args, prog)) != 0:
        return status
    if args.onnx is None:
        return 0
    from ..deploy.onnx_graph import export_onnx, onnx_accuracy

    try:
        result = export_onnx(args.run, args.onnx, int8=args.int8, atol=args.atol, scales=args.scales)
    except (ValueError, DataError, DiskFullError, OSError) as err:  # OSError: a write that failed midway
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    shape = "x".join(map(str, result.input_shape))
    print(f"wrote {result.onnx}; onnxruntime matches PyTorch to {result.max_abs_diff:.2e} on random inputs of shape "
          f"batch x {shape}")
    print(f"weights: {result.size['fp32_kb']:.2f} KB at fp32, {result.size['int8_kb']:.2f} KB at int8 "
          "(strrnn.model_size; the .onnx files also hold the graph)")
    if result.step is not None:
        print(f"wrote {result.step} (one frame: frame + state -> logits + state_out; looped over the frames it gives "
              f"the same logits); files: {_kb(result.onnx)} and {_kb(result.step)}")
    if result.int8 is not None:
        print(f"wrote {result.int8} (int8 weights); its top class equals the fp32 model's on "
              f"{100 * result.int8_agreement:.0f}% of the random inputs")
        if result.int8_step is not None:
            print(f"wrote {result.int8_step} (int8 step graph); files: {_kb(result.int8)} and {_kb(result.int8_step)}")
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


def _kb(path) -> str:
    return f"{path.stat().st_size / 1024:.1f} KB"


def _export_c(args, prog: str) -> int:
    """``--c FOLDER``: write, check and measure the C export; print what was written and how to build it."""
    from ..deploy.c_source import export_c

    try:
        result = export_c(args.run, args.c, int8=bool(args.int8), scales=args.scales, prefix=args.prefix,
                          atol=args.atol)
    except (ValueError, DiskFullError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:  # the compiler rejected the generated code: its first line, the rest is noise here
        print(f"{prog}: error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    info, size = result.info, result.footprint
    arith = f"int8, {args.scales} scales" if info["int8"] else "fp32"
    print(f"wrote {', '.join(str(p) for p in result.files)} ({arith}; {info['frames']} frames x {info['features']} "
          f"raw features -> {info['classes']} classes)")
    if result.checked:
        what = "the int8 C logits lie within" if info["int8"] else "the C logits match PyTorch's to"
        print(f"checked with {result.compiler}: {what} {result.max_rel_diff:.2e} (relative) on "
              f"{result.clips} random clips; same top class on {100 * result.agreement:.0f}%")
    else:
        print(result.note)
    if size["code_bytes"] is not None:
        flash = (f"flash {size['flash_bytes']:,} B (code {size['code_bytes']:,} + const "
                 f"{size['rodata_bytes'] + size['data_bytes']:,}; size -A of the -O2 object, {size['arch']})")
    else:
        flash = f"flash {size['flash_bytes']:,} B ({size['flash_source']})"
    print(f"{flash}, RAM {size['ram_bytes']:,} B (state {size['state_bytes']:,} + scratch "
          f"{size['scratch_bytes']:,}), {size['macs_per_frame']:,} multiply-adds per frame (+ {size['logits_macs']:,} "
          f"per {args.prefix}_logits call)")
    print(f"build: {result.build_command(args.prefix)}   (then ./{args.prefix} < clips.f32: {info['frames']} x "
          f"{info['features']} little-endian float32 raw features per clip, one line of logits each)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
