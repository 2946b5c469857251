"""Label audio files with a trained run: ``strrnn predict RUN a.wav b.wav ...``.

Prints one label per line, in the order of the files; ``--proba`` prints a tab-separated table instead (a header
``file label <class names...>``, then one row per file with its class probabilities; a backslash, tab, newline or
carriage return in a file name is written as ``\\\\``, ``\\t``, ``\\n``, ``\\r``, so that every row stays one
line of the same columns). A missing, empty or non-audio file is reported in one line naming it, with exit
status 2; a file scored but probably not as meant (truncated, longer than one clip, samples beyond [-1, 1]) gets a
one-line warning on stderr.
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


if __name__ == "__main__":
    sys.exit(main())
