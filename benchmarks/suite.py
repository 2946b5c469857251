"""Every benchmark in one command: speed ratios, rank vs accuracy (FSDD, Speech Commands), CNN sparsity (digits).

    python -m benchmarks.suite --quick     # smoke run of every benchmark, < 10 min on 2 cores
    python -m benchmarks.suite             # the full suite (the figures in benchmarks/README.md)
    python -m benchmarks.suite --only rank_vs_accuracy_100ep cnn_sparsity

Each benchmark runs as its own process (``python -m benchmarks.<script>`` in the repository root), one after
another (the training suites run ``--jobs 2`` training processes side by side, one thread each); its output goes
to ``<out>/logs/<name>.log`` and its wall time to ``<out>/suite.md``, where ``<out>`` is
``benchmarks/results/suite`` (``--quick``: ``benchmarks/results/suite/quick``). A failing benchmark is reported
and the suite goes on; the exit status is 1 if any failed. The training suites resume: rerunning after an
interruption reuses every finished run.

Data: rank_vs_accuracy reads FSDD (``../shared/data/fsdd``, else ``$STRRNN_FSDD`` or the user data folder; get it
with ``strrnn data download fsdd``); speech_commands_sample reads ``../shared/data/speech_commands_sample``
(real Speech Commands clips in the test-set layout); cnn_sparsity reads scikit-learn's digits (installed with strrnn);
the others make their own inputs. A benchmark whose data is missing is skipped ("skipped: needs ..." in
suite.md), not failed.
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import REPO, RESULTS

# name -> (script, full arguments, quick arguments or None to skip it in --quick). The full suite reproduces
# every published figure; quick runs write under results/<script>/quick and never over full results.
BENCHMARKS: dict[str, tuple[str, list[str], list[str] | None]] = {
    "feature_speed": ("feature_speed", ["--clips", "3000"], ["--clips", "300"]),
    "rnn_speed": ("rnn_speed", ["--out", "benchmarks/results/rnn_speed/table.md"], ["--quick"]),
    "overhead": ("overhead", ["--rounds", "20"], ["--rounds", "3"]),
    "cnn_overhead": ("cnn_overhead", ["--rounds", "20", "--threads", "1"], ["--rounds", "3", "--threads", "1"]),
    "inference_latency": ("inference_latency", [], ["--quick"]),
    "threads": ("threads", [], ["--quick"]),
    # the published FSDD table: learned STR at two decays (≈ 50% and ≈ 20% of W,U), the paper's recipe at two,
    # spectral GMP at each STR run's budget, every one with its fixed-rank twin
    "rank_vs_accuracy_100ep": ("rank_vs_accuracy", ["--epochs", "100", "--decays", "1", "3", "--paper-decays", "0.05",
                                                    "0.1", "--no-lstm", "--jobs", "2"], ["--quick"]),
    # learned ranks fall with the decay (one seed, no twins)
    "rank_vs_accuracy_sweep": ("rank_vs_accuracy", ["--epochs", "100", "--decays", "0.3", "1", "3", "10", "--seeds",
                                                    "0", "--no-lstm", "--no-vanilla", "--no-gmp", "--out",
                                                    "benchmarks/results/rank_vs_accuracy/100ep-sweep"], None),
    # learned STR under parameter budgets (≈ 50% and 20% of W,U): how close STR's own thresholds land (one controller)
    "rank_vs_accuracy_budget": ("rank_vs_accuracy", ["--epochs", "100", "--decays", "--target-params", "6600", "2640",
                                                     "--no-gmp", "--no-vanilla", "--no-lstm", "--jobs", "2", "--out",
                                                     "benchmarks/results/rank_vs_accuracy/100ep-budget"], None),
    # real Speech Commands (the 130-speaker sample): the same design with FSDD's decays
    "speech_commands_sample": ("rank_vs_accuracy", ["--dataset", "google12", "--epochs", "100", "--decays", "1", "3",
                                                    "--paper-decays", "0.1", "--no-lstm", "--jobs", "2"], None),
    # Speech Commands at half the W,U parameters: FSDD's λ cuts deeper there, so the size is asked for as a budget
    "speech_commands_budget": ("rank_vs_accuracy", ["--dataset", "google12", "--epochs", "100", "--decays",
                                                    "--target-params", "6600", "--no-gmp", "--no-vanilla", "--no-lstm",
                                                    "--jobs", "2", "--out",
                                                    "benchmarks/results/speech_commands_sample/100ep-budget"], None),
    # the paper's 300 epochs, FastGRNN only (the whole design at 300 epochs: drop --no-lstm)
    "rank_vs_accuracy_300ep": ("rank_vs_accuracy", ["--epochs", "300", "--no-lstm", "--jobs", "2"], None),
    "cnn_sparsity": ("cnn_sparsity", ["--jobs", "2"], ["--quick"]),
}


#: script -> "module:function" that returns what the script, run with the given arguments, needs and does not find
#: (``None``: its data is there). Scripts not listed make their own inputs or read installed data.
DATA_CHECKS: dict[str, str] = {"rank_vs_accuracy": "benchmarks.rank_vs_accuracy:missing_data"}


def missing_data(script: str, args: list[str]) -> str | None:
    """What benchmark ``script`` needs for ``args`` and does not find (:data:`DATA_CHECKS`), or ``None``."""
    if script not in DATA_CHECKS:
        return None
    module, function = DATA_CHECKS[script].split(":")
    return getattr(importlib.import_module(module), function)(args)


def run_benchmark(script: str, args: list[str], log: Path) -> tuple[int, float]:
    """Run ``python -m benchmarks.<script> args`` with its output in ``log``; return (exit status, wall seconds)."""
    start = time.perf_counter()
    with log.open("w") as handle:
        status = subprocess.run([sys.executable, "-m", f"benchmarks.{script}", *args], cwd=REPO, stdout=handle,
                                stderr=subprocess.STDOUT).returncode
    return status, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run of every benchmark (< 10 min on 2 cores)")
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), default=list(BENCHMARKS),
                        help="run only these benchmarks")
    args = parser.parse_args(argv)
    out = RESULTS / "suite" / ("quick" if args.quick else "")
    (out / "logs").mkdir(parents=True, exist_ok=True)
    rows, failed, total = [], [], time.perf_counter()
    for name in args.only:
        script, full, quick = BENCHMARKS[name]
        flags = quick if args.quick else full
        if flags is None:
            continue
        if (need := missing_data(script, flags)) is not None:
            print(f"{name} skipped: {need}", flush=True)
            rows.append(f"| {name} | `{' '.join(flags)}` | | skipped: {need} |")
            continue
        log = out / "logs" / f"{name}.log"
        print(f"{name} {' '.join(flags)} ...", end=" ", flush=True)
        status, seconds = run_benchmark(script, flags, log)
        print(f"{'ok' if status == 0 else f'FAILED (exit {status}, see {log})'} in {seconds:.0f} s", flush=True)
        rows.append(f"| {name} | `{' '.join(flags)}` | {seconds:.0f} | {'ok' if status == 0 else 'failed'} |")
        if status:
            failed.append(name)
    minutes = (time.perf_counter() - total) / 60
    table = "\n".join(["| benchmark | arguments | wall s | status |", "|---|---|---|---|", *rows,
                       f"| **total** | | **{minutes * 60:.0f}** ({minutes:.1f} min) | |"])
    (out / "suite.md").write_text(f"`python -m benchmarks.suite{' --quick' if args.quick else ''}`, "
                                  f"{time.strftime('%Y-%m-%d %H:%M')}\n\n{table}\n")
    print(table)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
