"""strrnn's benchmarks: the speed and accuracy measurements behind benchmarks/README.md.

Every script runs as a module from the repository root — ``python -m benchmarks.<script> --help`` — and writes
its results under ``benchmarks/results/<script>/``. Shared helpers: :mod:`benchmarks.timing` (the one interleaved
timer behind every speed ratio) and :mod:`benchmarks.runner` (training processes for the accuracy suites).
"""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
