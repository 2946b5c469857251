"""strrnn's benchmarks: the speed and accuracy measurements behind benchmarks/README.md.

Every script runs as a module from the repository root — ``python -m benchmarks.<script> --help`` — and writes
its results under ``benchmarks/results/<script>/``. Shared helpers: :mod:`benchmarks.timing` (the one interleaved
timer behind every speed ratio) and :mod:`benchmarks.runner` (training processes for the accuracy suites).
"""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def command_line(module: str, argv: list[str]) -> str:
    """The command that reproduces a benchmark, as its results record it: ``python -m <module> ARGS`` with every
    argument that is a path inside the repository written relative to it (a table names no machine's folders)."""
    import shlex

    def portable(arg: str) -> str:
        if not arg.startswith("/"):
            return arg
        try:
            return str(Path(arg).resolve().relative_to(REPO))
        except ValueError:
            return arg

    return shlex.join(["python", "-m", module, *map(portable, argv)])
