"""Run STR levers and their fixed-rank twins, sequentially, resumably.

    python -m research.rank_parity.sweep --runs baseline:3e-2 rel-max:0.3 --seeds 0 1 2 --epochs 100 [--dense]

For each ``lever:strength`` and seed: the STR run, then vanilla fixed-rank training from scratch at exactly the
ranks that run ended with (same seed, same epochs, same weight optimizer and schedule). ``--dense`` adds the
full-rank reference per seed. Every run is one :func:`research.rank_parity.harness.train` call in this process at
one thread; a run whose JSON exists is read back instead of retrained, so a stopped sweep loses nothing. A
failed run is recorded as ``results/<name>.failed.json`` and the sweep goes on.
"""

from __future__ import annotations

import argparse
import traceback
from pathlib import Path

from research.rank_parity import harness


def parse_runs(specs: list[str]) -> list[tuple[str, float]]:
    """``["lever:strength", ...]`` -> ``[(lever, strength), ...]`` (checked against the lever registry)."""
    out = []
    for spec in specs:
        lever, _, strength = spec.partition(":")
        if lever not in harness.LEVERS:
            raise SystemExit(f"unknown lever {lever!r}; known: {', '.join(harness.LEVERS)}")
        if not strength:
            raise SystemExit(f"{spec!r}: give a strength as lever:strength")
        out.append((lever, float(strength)))
    return out


def _guarded(name: str, results: Path, fn, *args, **kwargs) -> dict | None:
    try:
        return fn(*args, **kwargs)
    except Exception as err:  # noqa: BLE001 - a failed configuration is recorded, the sweep goes on
        print(f"FAILED {name}: {err!r}", flush=True)
        harness.write_json_atomic(results / f"{name}.failed.json",
                                  {"name": name, "error": repr(err), "traceback": traceback.format_exc()})
        return None


def sweep(runs: list[tuple[str, float]], seeds: list[int], epochs: int, dense: bool = False,
          results: Path = harness.RESULTS, data_root=harness.DEFAULT_DATA,
          twin_range: tuple[float, float] = (0.0, 100.0)) -> None:
    """STR run then its fixed-rank twin for every (lever, strength, seed); seeds innermost.

    The twin is trained only when the STR run kept ``twin_range`` (percent of the dense W,U parameters).
    """
    if dense:
        for seed in seeds:
            name = harness.run_name("dense", None, seed, epochs)
            _guarded(name, results, harness.train, "dense", None, seed, epochs, None, data_root, results)
    for lever, strength in runs:
        for seed in seeds:
            name = harness.run_name(lever, strength, seed, epochs)
            result = _guarded(name, results, harness.train, lever, strength, seed, epochs, None, data_root, results)
            if result is None:
                continue
            ranks = result["ranks"]
            if not twin_range[0] <= result["wu_pct"] <= twin_range[1]:
                print(f"{name}: {result['wu_pct']:.0f}% of W,U is outside {twin_range}; no twin", flush=True)
                continue
            twin = harness.run_name("fixed-rank", None, seed, epochs, ranks)
            _guarded(twin, results, harness.train, "fixed-rank", None, seed, epochs, ranks, data_root, results)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="*", default=[], help="lever:strength pairs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--dense", action="store_true", help="also the full-rank reference per seed")
    parser.add_argument("--twin-range", type=float, nargs=2, default=(0.0, 100.0),
                        help="train the fixed-rank twin only when STR kept this %% of the W,U parameters")
    parser.add_argument("--data-dir", default=str(harness.DEFAULT_DATA))
    parser.add_argument("--results", default=str(harness.RESULTS))
    args = parser.parse_args(argv)
    sweep(parse_runs(args.runs), args.seeds, args.epochs, args.dense, Path(args.results), args.data_dir,
          tuple(args.twin_range))


if __name__ == "__main__":
    main()
