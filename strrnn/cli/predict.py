"""Label audio files with a trained run: ``strrnn predict RUN a.wav b.wav ...``.

Prints one label per line, in the order of the files; ``--proba`` prints a tab-separated table instead (a header
``file label <class names...>``, then one row per file with its class probabilities; a backslash, tab, newline or
carriage return in a file name is written as ``\\\\``, ``\\t``, ``\\n``, ``\\r``, so that every row stays one
line of the same columns). A missing, empty or non-audio file is reported in one line naming it, with exit
status 2; a file scored but probably not as meant (truncated, longer than one clip, samples beyond [-1, 1]) gets a
one-line warning on stderr.

``--stream`` spots keywords in recordings of any length instead (:mod:`strrnn.streaming`): the model runs frame by
frame over overlapping windows (``--window``, every ``--hop`` seconds; engine PyTorch, the ONNX step graph or the C
export), the posteriors are smoothed over ``--smooth`` windows, and every keyword whose smoothed posterior reaches
``--threshold`` is printed with its time: a header ``file start_s end_s label confidence``, then one tab-separated
row per detection (``end_s``: where the word ends; it lies in ``[start_s, end_s]``).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _field(text: str) -> str:
    """``text`` as one TSV field: the characters that would split the field or the row, escaped."""
    return text.translate(_ESCAPES)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="strrnn predict", description=__doc__.split("\n")[0])
    p.add_argument("run", help="run folder written by strrnn train (or its exported.pt)")
    p.add_argument("files", nargs="+", help="audio files (WAV or any libsndfile format; other rates are resampled)")
    p.add_argument("--proba", action="store_true", help="print class probabilities (tab-separated, with a header)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    p.add_argument("--batch-size", type=int, default=256, help="files featurized and scored together")
    p.add_argument("--threads", type=int, default=None,
                   help="intra-op threads (default: 1 for recurrent models of at most 256 hidden units)")
    stream = p.add_argument_group("keyword spotting in long recordings (--stream)")
    stream.add_argument("--stream", action="store_true",
                        help="spot keywords frame by frame in recordings of any length; print each with its time")
    stream.add_argument("--window", type=float, default=None, metavar="S",
                        help="window length in seconds (default: the run's clip length)")
    stream.add_argument("--hop", type=float, default=0.05, metavar="S", help="a window starts every S seconds "
                        "(default: 0.05)")
    stream.add_argument("--smooth", type=int, default=5, metavar="N",
                        help="posteriors averaged over the last N windows (default: 5)")
    stream.add_argument("--threshold", type=float, default=0.6, metavar="P",
                        help="smoothed posterior at which a keyword fires (default: 0.6)")
    stream.add_argument("--merge", type=float, default=0.3, metavar="S",
                        help="detections ending closer than S seconds are one word (default: 0.3)")
    stream.add_argument("--ignore", default=None, metavar="LABELS",
                        help="comma-separated labels that never fire (default: every _label_ such as _silence_)")
    stream.add_argument("--engine", choices=("torch", "onnx", "c"), default="torch",
                        help="run the model with PyTorch (default), the ONNX step graph, or the C export")
    stream.add_argument("--engine-file", default=None, metavar="PATH",
                        help="onnx: a .step.onnx from strrnn export --onnx; c: a checker built from strrnn export "
                             "--c (default: built from the run)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``strrnn predict``; returns the exit status."""
    args = build_parser().parse_args(argv)
    from ..predictor import InputError, InputWarning, load  # torch and the data sets: not needed for --help
    from .threads import apply_threads, threads_for_run

    prog = "strrnn predict"
    try:
        apply_threads(threads_for_run(args.run, args.threads))
    except ValueError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    if args.batch_size < 1:
        print(f"{prog}: error: --batch-size must be at least 1, got {args.batch_size}", file=sys.stderr)
        return 2
    try:
        predictor = load(args.run, device=args.device, batch_size=args.batch_size)
    except ValueError as err:  # also an unusable --device, named as such
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - a corrupt exported.pt raises pickle/zip/runtime errors
        print(f"{prog}: error: cannot read the exported model of {args.run} ({type(err).__name__}): exported.pt is "
              "damaged or incomplete; finish the run (strrnn train ... --resume) to write it again",
              file=sys.stderr)
        return 2
    if args.stream:
        return _stream(args, predictor, prog)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", InputWarning)
            proba = predictor.predict_proba(args.files)
    except (InputError, RuntimeError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    for warning in caught:
        if issubclass(warning.category, InputWarning):
            print(f"{prog}: warning: {warning.message}", file=sys.stderr)
    labels = [predictor.labels[k] for k in proba.argmax(axis=1)]
    if args.proba:
        lines = ["\t".join(["file", "label", *predictor.labels])]
        lines += ["\t".join([_field(path), label, *(f"{p:.6f}" for p in row)])
                  for path, label, row in zip(args.files, labels, proba, strict=True)]
    else:
        lines = labels
    try:
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. piped into `head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _stream(args, predictor, prog: str) -> int:
    """``--stream``: the detections of every file, tab-separated under one header."""
    from ..streaming import StreamSettings, spot

    if args.proba:
        print(f"{prog}: error: --proba prints clip probabilities; with --stream each detection has its confidence",
              file=sys.stderr)
        return 2
    ignore = None if args.ignore is None else tuple(x.strip() for x in args.ignore.split(",") if x.strip())
    settings = StreamSettings(window=args.window, hop=args.hop, smooth=args.smooth, threshold=args.threshold,
                              ignore=ignore, merge=args.merge)
    rows = ["\t".join(["file", "start_s", "end_s", "label", "confidence"])]
    for path in args.files:
        try:
            found = spot(predictor, path, settings, engine=args.engine, engine_file=args.engine_file)
        except ValueError as err:  # InputError and a missing [onnx] extra are ValueErrors
            print(f"{prog}: error: {err}", file=sys.stderr)
            return 2
        except RuntimeError as err:  # the C engine's compiler failed: its first line
            print(f"{prog}: error: {str(err).splitlines()[0]}", file=sys.stderr)
            return 2
        rows += [f"{_field(path)}\t{d.start:.2f}\t{d.end:.2f}\t{d.label}\t{d.confidence:.3f}" for d in found]
    try:
        sys.stdout.write("\n".join(rows) + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
