"""``strrnn synthesize``: speak keyword lists with espeak-ng into the Speech Commands layout.

The library function is :func:`strrnn.data.synthesize` (module :mod:`strrnn.data.synth`).
"""

from __future__ import annotations

import argparse
import sys
import time


def main(argv: list[str] | None = None) -> int:
    """``strrnn synthesize``; bad flags or words exit 2 with one line. Returns the exit status."""
    ap = argparse.ArgumentParser(prog="strrnn synthesize", description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--words",
        default="google13",
        help="google12 | google13 | google30 | google35 | comma-separated list (default google13)",
    )
    ap.add_argument("--out", required=True, help="output folder (Speech Commands layout)")
    ap.add_argument("--per-word", type=int, default=50, help="clips per keyword (default 50)")
    ap.add_argument("--negatives-per-word", type=int, default=None, help="clips per negative word (per-word/2)")
    ap.add_argument("--no-negatives", action="store_true", help="do not add non-keyword words")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--noise-seconds", type=float, default=60.0, help="length of each background-noise file")
    ap.add_argument("--workers", type=int, default=None, help="parallel espeak-ng processes (2 x CPUs)")
    ap.add_argument("--overwrite", action="store_true", help="allow a non-empty output folder")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    a = ap.parse_args(argv)
    from ..data.errors import MissingToolError  # numpy, soundfile and the data modules: not needed for --help
    from ..data.synth import BACKGROUND, resolve_words, synthesize

    try:
        resolve_words(a.words)  # a bad word is a usage error (exit 2), found before anything is written
    except ValueError as exc:
        ap.error(str(exc))
    t0 = time.perf_counter()
    try:
        out = synthesize(
            a.words,
            a.out,
            a.per_word,
            seed=a.seed,
            negatives=not a.no_negatives,
            negatives_per_word=a.negatives_per_word,
            noise_seconds=a.noise_seconds,
            workers=a.workers,
            progress=not a.quiet,
            overwrite=a.overwrite,
        )
    except (MissingToolError, FileExistsError, ValueError) as exc:
        print(f"strrnn synthesize: error: {exc}", file=sys.stderr)
        return 2
    n = sum(1 for _ in out.glob("*/*.wav")) - sum(1 for _ in (out / BACKGROUND).glob("*.wav"))
    print(f"wrote {n} clips to {out} in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
