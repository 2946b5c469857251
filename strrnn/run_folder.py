"""Run folders: where ``python -m strrnn.train`` writes, and the rules that keep it from destroying anything else.

A run folder holds only what a run writes (:data:`RUN_ENTRIES`) plus the marker file :data:`MARKER`. The rules:

* ``--out`` may not be empty, the current folder or one of its parents, the home folder or one of its parents, or
  a filesystem root; it may not be an existing file, and its parent must be writable;
* an existing non-empty folder is used only with ``--resume`` (it must hold ``last.ckpt``) or replaced only with
  ``--overwrite`` — and replaced only when it is recognisably a strrnn run folder (a run's ``config.yaml`` and
  nothing but run files), and only once the new run's data and model have been built (:func:`create`).

Nothing here deletes a file that a run did not write.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import yaml

__all__ = ["MARKER", "RUN_ENTRIES", "RunFolderError", "check_out", "is_run_folder", "foreign_entries", "create"]

MARKER = ".strrnn-run"
RUN_ENTRIES = frozenset({
    MARKER, "config.yaml", "metrics.csv", "ranks.csv", "report.csv", "report.md", "flops.csv", "best.ckpt",
    "last.ckpt", "exported.pt", "summary.json", "logs", "hparams.yaml",
})
_TEMPORARY = re.compile(r"\..+\.tmp")  # atomic writes in flight (strrnn.fileio) left by a killed run


class RunFolderError(Exception):
    """``--out`` is unusable; the message says why and what to do. Nothing was changed on disk."""


def _protected(path: Path) -> str | None:
    """Why ``path`` (resolved) may never be a run folder, or None."""
    cwd = Path.cwd().resolve()
    home = Path.home().resolve()
    if path == Path(path.anchor):
        return "a filesystem root"
    if path == cwd or path in cwd.parents:
        return "the current folder or one of its parents"
    if path == home or path in home.parents:
        return "the home folder or one of its parents"
    return None


def check_out(out: str | os.PathLike | None, resume: bool = False, overwrite: bool = False) -> Path:
    """Validate ``--out`` before any work is done; return it as a Path. Changes nothing on disk.

    Raises:
        RunFolderError: empty or protected path; an existing file; a parent that cannot be written; an
            existing non-empty folder without ``--resume``/``--overwrite``; ``--overwrite`` on a folder that
            holds anything a run did not write; ``--resume`` without ``last.ckpt``.
    """
    if out is None or not str(out).strip():
        raise RunFolderError("--out is empty; give the run folder a name, e.g. --out runs/my-run")
    path = Path(os.path.expanduser(str(out)))
    resolved = path.resolve()
    reason = _protected(resolved)
    if reason:
        raise RunFolderError(f"--out {out!s} is {reason}; a run folder must be a folder of its own, "
                             "e.g. --out runs/my-run")
    if path.exists() and not path.is_dir():
        raise RunFolderError(f"--out {out!s} is an existing file, not a folder; choose another --out")
    existing = next((p for p in (resolved, *resolved.parents) if p.exists()), None)
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise RunFolderError(f"--out {out!s}: cannot write in {existing} (read-only or no permission); "
                             "choose a writable --out")
    if not (path.is_dir() and any(path.iterdir())):
        if resume:
            raise RunFolderError(f"--resume: {out!s} holds no run to continue (no last.ckpt); run without --resume")
        return path
    if resume:
        if not (path / "last.ckpt").is_file():
            raise RunFolderError(f"--resume: {out!s} has no last.ckpt to continue from (the run stopped before its "
                                 "first epoch ended); start it again with --overwrite")
        return path
    if not overwrite:
        raise RunFolderError(f"run folder {out!s} exists; pass --resume to continue it or --overwrite to replace it")
    foreign = foreign_entries(path)
    if foreign or not is_run_folder(path):
        listed = ", ".join(foreign[:5]) + (" …" if len(foreign) > 5 else "")
        what = f"it holds {listed}, which no run writes" if foreign else "it has no strrnn config.yaml"
        raise RunFolderError(f"--overwrite: {out!s} is not a strrnn run folder ({what}); strrnn only replaces its "
                             "own run folders: choose another --out, or move the folder away yourself")
    return path


def foreign_entries(path: Path) -> list[str]:
    """Names in ``path`` that a run does not write (sorted)."""
    return sorted(e.name for e in path.iterdir() if e.name not in RUN_ENTRIES and not _TEMPORARY.fullmatch(e.name))


def is_run_folder(path: Path) -> bool:
    """True when ``path`` is a folder that a strrnn run wrote: its marker, or a run's ``config.yaml``, and no
    entry that a run does not write."""
    if not path.is_dir() or path.is_symlink() or foreign_entries(path):
        return False
    if (path / MARKER).is_file():
        return True
    try:
        config = yaml.safe_load((path / "config.yaml").read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return False
    return isinstance(config, dict) and {"dataset", "mode", "out"} <= set(config)


def create(path: Path, overwrite: bool = False) -> None:
    """Create the run folder ``path`` with its marker; with ``overwrite`` first delete the run folder there.

    Call it after :func:`check_out` accepted ``path`` and the run's data and model were built, so that a typo in
    any other flag never costs the previous run. Only a recognisable run folder is deleted (checked again here).
    """
    path = Path(path)
    if overwrite and path.is_dir() and any(path.iterdir()):
        if not is_run_folder(path):  # it changed since check_out: refuse rather than guess
            raise RunFolderError(f"--overwrite: {path} is no longer a strrnn run folder; nothing was deleted")
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    if not (path / MARKER).exists():
        (path / MARKER).write_text("written by python -m strrnn.train; the folder may be replaced by --overwrite\n")
