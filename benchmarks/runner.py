"""Run ``python -m strrnn.train`` processes for the benchmark suites: reuse, resume, refuse stale runs.

A suite is dozens of training runs; it must survive interruption and never mix results made with other
settings. :func:`train_run` therefore

- reuses a finished run folder (``summary.json`` exists) only when its stored ``config.yaml`` matches the flags
  asked for now — every setting the run's mode reads (:attr:`strrnn.modes.Mode.unread`) — and otherwise stops
  with a message naming the differing settings;
- resumes an interrupted one from its ``last.ckpt`` (``--resume``);
- starts anything else afresh (``--overwrite``).

Small recurrent models train fastest at one thread each, so every process gets ``OMP_NUM_THREADS=1`` and a suite
runs ``--jobs`` of them side by side.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from benchmarks import REPO
from strrnn.cli import train
from strrnn.modes import get_mode

# where a run's data lives does not change what it computed
_IGNORED = train.OPERATIONAL | {"data_dir"}


class StaleRunError(RuntimeError):
    """A finished run folder was made with other settings than the ones asked for."""


def stale_settings(run_dir: Path, flags: list[str]) -> list[str]:
    """The settings in which ``run_dir``'s stored ``config.yaml`` differs from ``flags`` (empty: reusable)."""
    wanted = train.parse_config(flags)
    stored = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    ignored = _IGNORED | get_mode(wanted["mode"]).unread  # e.g. a dense run does not go stale with --strength
    return [f"{key}: {stored.get(key)!r} there, {wanted[key]!r} asked" for key in sorted(wanted)
            if key not in ignored and _normal(key, stored.get(key)) != _normal(key, wanted[key])]


def _normal(key: str, value):
    # training processes run in the repository root, so a relative run folder is relative to it
    return str((REPO / value).resolve()) if key == "budget_from" and value else value


def train_run(run_dir: Path, flags: list[str], log: Path, threads: int = 1) -> dict:
    """Train (or reuse, or resume) one run in ``run_dir`` with ``flags``; return its ``summary.json``.

    Raises :class:`StaleRunError` when a finished run there was made with other settings, and ``RuntimeError``
    (naming the log) when the process fails.
    """
    run_dir = Path(run_dir)
    summary = run_dir / "summary.json"
    if summary.is_file():
        differ = stale_settings(run_dir, flags)
        if differ:
            raise StaleRunError(f"{run_dir} holds a finished run with other settings ({'; '.join(differ)}); "
                                "delete it or pass another --out")
        return json.loads(summary.read_text())
    resume = ["--resume"] if (run_dir / "last.ckpt").is_file() else ["--overwrite"]
    command = [sys.executable, "-m", "strrnn.train", *flags, "--out", str(run_dir), "--no-progress-bar", *resume]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as handle:
        result = subprocess.run(command, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise RuntimeError(f"run failed ({result.returncode}): {' '.join(command)}; see {log}")
    return json.loads(summary.read_text())
