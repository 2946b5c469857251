"""The demo: a dense and a low-rank STR keyword spotter trained side by side, compared in one table.

    strrnn demo [--config configs/demo.yaml] [--out runs/demo] [any strrnn train flag ...]

``make demo`` runs it on the embedded default data (synthetic Speech Commands spoken by espeak-ng, synthesized
into the checkout on first use). Both models are the same FastGRNN trained with the same settings; only ``--mode``
differs (``dense`` vs ``lowrank``, i.e. learned STR: :class:`strrnn.STRRecipe`). The data is prepared once
(synthesis and the feature cache), then the two trainings run as two ``python -m strrnn.train`` processes at one
thread each — on two cores, side by side in the time of one. Their run folders are ``<out>/dense`` and
``<out>/lowrank``; the table (test accuracy, learned ranks, parameters, size in KB) is printed and written to
``<out>/comparison.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from ..data.errors import DataError  # (light: strrnn.data loads its data modules on first use)
from ..fileio import atomic_write_text

MODES = ("dense", "lowrank")


def side_by_side(summaries: dict[str, dict]) -> str:
    """A markdown table comparing finished runs, one column per mode.

    ``summaries``: mode name -> the run's ``summary.json`` (as written by ``python -m strrnn.train``).
    """
    def ranks(s):
        if s["mode"] != "lowrank" or not s["ranks"]:
            return "full"
        return ", ".join(f"{name.rsplit('.', 1)[-1]} {rank}" for name, rank in s["ranks"].items())

    def wu_params(s):
        if s["mode"] != "lowrank":
            return "100%"
        share = 100 * s["params_str"] / s["params_str_dense"]
        return f"{s['params_str']:,} of {s['params_str_dense']:,} ({share:.0f}%)"

    rows = [
        ("test accuracy", lambda s: f"{100 * s['test_acc']:.1f}%"),
        ("ranks of W, U", ranks),
        ("W, U parameters", wu_params),
        ("model parameters", lambda s: f"{s['params_exported']:,}"),
        ("size fp32 / int8", lambda s: f"{s['size_fp32_kb']:.1f} / {s['size_int8_kb']:.1f} KB"),
        ("training time", lambda s: f"{s['wall_time_s']:.0f} s"),
    ]
    names = list(summaries)
    lines = ["| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for label, cell in rows:
        lines.append(f"| {label} | " + " | ".join(cell(summaries[n]) for n in names) + " |")
    return "\n".join(lines)


def prepare_data(config_file: str, extra: list[str]) -> None:
    """Synthesize the data (if asked and absent) and fill the feature cache once, before two trainings read it."""
    from .. import artifacts
    from . import train

    config = train.parse_config(["--config", config_file, "--out", "unused", *extra])
    datamodule = artifacts.build_datamodule(config)
    datamodule.setup("fit")
    datamodule.setup("test")


def train_side_by_side(config_file: str, out: Path, extra: list[str]) -> dict[str, dict]:
    """Train every mode of :data:`MODES` at once (one process and one thread each); return their summaries.

    Raises ``RuntimeError`` naming the log of a run that failed.
    """
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    processes = {}
    for mode in MODES:
        command = [sys.executable, "-m", "strrnn.train", "--config", config_file, *extra, "--mode", mode,
                   "--out", str(out / mode), "--overwrite", "--no-progress-bar"]
        log = (out / f"{mode}.log").open("w")
        processes[mode] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env), log)
    failed = []
    for mode, (process, log) in processes.items():
        if process.wait() != 0:
            failed.append(f"{mode} (exit {process.returncode}; see {out / f'{mode}.log'})")
        log.close()
    if failed:
        raise RuntimeError("training failed: " + ", ".join(failed))
    return {mode: json.loads((out / mode / "summary.json").read_text()) for mode in MODES}


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``strrnn demo``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="strrnn demo", description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/demo.yaml", help="the shared settings of both runs (YAML)")
    parser.add_argument("--out", default="runs/demo", help="folder of the two run folders and comparison.md")
    args, extra = parser.parse_known_args(argv)
    if "--mode" in extra or "--out" in extra:
        parser.error("--mode and --out are the demo's own: it trains dense and lowrank into <--out>/<mode>")
    out = Path(args.out)
    try:
        prepare_data(args.config, extra)
        summaries = train_side_by_side(args.config, out, extra)
    except (ValueError, RuntimeError, DataError) as err:  # UsageError is a ValueError
        print(f"strrnn demo: error: {err}", file=sys.stderr)
        return 2
    table = side_by_side(summaries)
    atomic_write_text(out / "comparison.md", table + "\n")
    print(table)
    print(f"\nrun folders: {out / 'dense'}, {out / 'lowrank'}; table: {out / 'comparison.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
