"""Run folders: where ``python -m strrnn.train`` writes, and the rules that keep it from destroying anything else.

A run folder holds only what a run writes (:data:`RUN_ENTRIES`, among them the marker file :data:`MARKER` and,
while a training runs in it, the lock file :data:`LOCK`) and what the other tools write beside it
(:data:`TOOL_ENTRIES`). The rules:

* ``--out`` may not be empty, the current folder or one of its parents, the home folder or one of its parents, or
  a filesystem root; it may not be an existing file, and its parent must be writable;
* an existing non-empty folder is used only with ``--resume`` (it must hold ``last.ckpt``) or replaced only with
  ``--overwrite`` — and replaced only when it is recognisably a strrnn run folder (a run's ``config.yaml`` and
  nothing but run files), and only once the new run's data and model have been built (:func:`create`);
* one training at a time: :func:`lock` holds an exclusive ``flock`` on :data:`LOCK` for the whole run, and a second
  training on the same folder (``--resume`` and ``--overwrite`` included) is refused; the kernel drops the lock
  of a process that dies, so a killed run never leaves a stale lock;
* the other tools never write a run's files: every output path goes through :func:`check_output` first.

Nothing here deletes a file that a run did not write.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import tempfile
from pathlib import Path

import yaml

__all__ = ["MARKER", "LOCK", "RUN_ENTRIES", "TOOL_ENTRIES", "RunFolderError", "RunLock", "check_out",
           "is_run_folder", "foreign_entries", "create", "lock", "in_use", "run_folder_of", "check_output",
           "check_output_folder"]

MARKER = ".strrnn-run"
LOCK = ".strrnn-lock"
RUN_ENTRIES = frozenset({
    MARKER, LOCK, "config.yaml", "metrics.csv", "ranks.csv", "report.csv", "report.md", "flops.csv", "best.ckpt",
    "last.ckpt", "exported.pt", "summary.json", "logs", "hparams.yaml", "tensorboard",
})
#: what strrnn's other tools write into a run folder (``strrnn evaluate``'s confusion matrices): not the run's
#: own files, but no reason to refuse ``--overwrite`` either
TOOL_ENTRIES = frozenset({"confusion_test.csv", "confusion_val.csv"})
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
    if not (path.is_dir() and any(e.name != LOCK for e in path.iterdir())):
        if resume:
            raise RunFolderError(f"--resume: {out!s} holds no run to continue (no last.ckpt); run without --resume")
        return path
    if resume:
        if not (path / "last.ckpt").is_file():
            raise RunFolderError(f"--resume: {out!s} has no last.ckpt to continue from (the run stopped before its "
                                 "first epoch ended); start it again with --overwrite")
        if (path / "summary.json").is_file():
            # Lightning would skip the finished fit and restart the CSV log with the test row alone
            raise RunFolderError(f"--resume: {out!s} is a finished run (it has summary.json); nothing to resume — "
                                 "use --overwrite to train again")
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
    """Names in ``path`` that neither a run nor strrnn's other tools write (sorted)."""
    return sorted(e.name for e in path.iterdir()
                  if e.name not in RUN_ENTRIES | TOOL_ENTRIES and not _TEMPORARY.fullmatch(e.name))


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
    if overwrite and path.is_dir() and any(e.name != LOCK for e in path.iterdir()):
        if not is_run_folder(path):  # it changed since check_out: refuse rather than guess
            raise RunFolderError(f"--overwrite: {path} is no longer a strrnn run folder; nothing was deleted")
        for entry in path.iterdir():
            if entry.name != LOCK:  # the lock of this very run: removing it would let a second run in
                _remove(entry)
    path.mkdir(parents=True, exist_ok=True)
    if not (path / MARKER).exists():
        (path / MARKER).write_text("written by python -m strrnn.train; the folder may be replaced by --overwrite\n")


def _remove(entry: Path) -> None:
    """Delete one entry of a run folder; a symbolic link is removed itself, never what it points to."""
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry)
    else:
        entry.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------------------
# one training per run folder
# ---------------------------------------------------------------------------------------------------------
class RunLock:
    """The exclusive lock of one training on its run folder (:func:`lock`); :meth:`release` ends it.

    ``created``: the folders that :func:`lock` had to create (the run folder, and any missing parents), outermost
    last — what a failed start removes again.
    """

    def __init__(self, path: Path, fd: int, created: list[Path]) -> None:
        self.path = path
        self.created = created
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        """Whether this lock is still held."""
        return self._fd is not None

    def release(self, discard: bool = False) -> None:
        """Unlock the folder (idempotent).

        ``discard``: the run failed before its first checkpoint, so nothing in the folder can be resumed: delete
        what a run writes there (:data:`RUN_ENTRIES`; anything else stays) and then the folders :func:`lock`
        created, if nothing else is left in them. The next try then starts from scratch, without ``--overwrite``.
        """
        if self._fd is None:
            return
        try:
            if discard and not (self.path / "last.ckpt").exists():
                for entry in self.path.iterdir():
                    if entry.name in RUN_ENTRIES and entry.name != LOCK:
                        _remove(entry)
            # unlinked while still locked: a process that opened the old file before this point finds its inode
            # gone from the folder after locking it, and tries again on a fresh file (see lock())
            (self.path / LOCK).unlink(missing_ok=True)
        finally:
            os.close(self._fd)
            self._fd = None
        if discard:
            for folder in self.created:
                try:
                    folder.rmdir()  # only when empty: a foreign file keeps its folder
                except OSError:
                    break

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _holder(path: Path) -> str:
    try:
        pid = (path / LOCK).read_text().strip()
    except OSError:
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""


def in_use(path: str | os.PathLike) -> str | None:
    """The message for ``path`` when another process holds its lock (:func:`lock`), else None. Creates nothing."""
    path = Path(path)
    try:
        fd = os.open(path / LOCK, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return (f"run folder {path} is in use by another training{_holder(path)}; wait for it to finish, or choose "
                "another --out")
    except OSError:
        return None
    finally:
        os.close(fd)  # closing drops the probe's own lock, if it got one
    return None


def lock(path: str | os.PathLike) -> RunLock:
    """Lock the run folder ``path`` for this process, creating it (and missing parents) when absent.

    Call it once :func:`check_out` accepted ``path``; hold the lock for the whole run. The lock is an ``flock`` on
    ``path/.strrnn-lock`` (which holds the owner's pid, for the message): the kernel releases it when its process
    exits however it exits, so a killed run never leaves a stale lock behind.

    Raises:
        RunFolderError: another process holds the lock (naming its pid), or the folder cannot be created.
    """
    path = Path(path)
    missing = [p for p in (path, *path.parents) if not p.exists()]
    created = []
    for folder in reversed(missing):  # outermost first; another process may create any of them meanwhile
        try:
            folder.mkdir()
            created.append(folder)
        except FileExistsError:
            pass
        except OSError as err:
            raise RunFolderError(f"cannot create the run folder {path}: {err.strerror or err}") from None
    created.reverse()
    while True:
        try:
            fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as err:
            raise RunFolderError(f"cannot lock the run folder {path}: {err.strerror or err}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunFolderError(in_use(path) or f"run folder {path} is in use by another training") from None
        try:
            current = os.stat(path / LOCK).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(fd).st_ino:
            break
        os.close(fd)  # the previous holder removed the file between our open and flock: lock the one there now
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return RunLock(path, fd, created)


# ---------------------------------------------------------------------------------------------------------
# output paths of the other tools
# ---------------------------------------------------------------------------------------------------------
def _looks_like_run(folder: Path) -> bool:
    # the marker, or what every run writes first beside what it writes later (runs of older versions)
    return (folder / MARKER).is_file() or ((folder / "config.yaml").is_file() and any(
        (folder / name).is_file() for name in ("summary.json", "exported.pt", "last.ckpt", "metrics.csv")))


def run_folder_of(path: str | os.PathLike) -> Path | None:
    """The run folder that ``path`` lies in (the innermost one), or None. ``path`` need not exist."""
    path = Path(os.path.abspath(os.path.expanduser(str(path))))
    return next((folder for folder in path.parents if _looks_like_run(folder)), None)


def _owned_by_a_run(path: Path) -> tuple[Path, Path] | None:
    """``(run folder, path inside it)`` when ``path`` is, or lies under, one of a run folder's own entries."""
    run = run_folder_of(path)
    if run is None:
        return None
    inside = path.relative_to(run)
    return (run, inside) if inside.parts and inside.parts[0] in RUN_ENTRIES else None


def _probe(folder: Path, name: str) -> None:
    """Create and delete one empty file in ``folder``: the only sure test of writability (``os.access`` says yes
    to root on ``/proc``). Its name is that of an atomic write in flight, which no run-folder rule counts."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    os.close(fd)
    os.unlink(tmp)


def _writable_from(path: Path, flag: str, shown: str) -> None:
    """Raise unless the files under ``path`` can be created: its first existing ancestor is a writable folder."""
    existing = next((p for p in path.parents if os.path.lexists(p)), None)
    if existing is None:
        return
    if not existing.is_dir():
        raise RunFolderError(f"{flag} {shown}: {existing} is a file, not a folder; choose another path")
    try:
        _probe(existing, path.name or "probe")
    except OSError as err:
        raise RunFolderError(f"{flag} {shown}: cannot create files in {existing} ({err.strerror or err}); choose "
                             "a writable location") from None


def _named(path, flag: str, what: str) -> tuple[str, Path, Path]:
    """``(as given, ~ expanded, absolute)`` of an output path; an empty one is refused naming ``what`` to give."""
    if path is None or not str(path).strip():
        raise RunFolderError(f"{flag} is empty; give {what}")
    expanded = Path(os.path.expanduser(str(path)))
    return str(path), expanded, Path(os.path.abspath(expanded))


def check_output(path: str | os.PathLike, flag: str) -> Path:
    """Validate an output file of a tool (``--onnx``, ``--csv``, ``--plot``, ...) before anything is written.

    Refused: an empty path, a folder, something that is not a regular file (a device, a FIFO), a run folder's own
    file or anything under one of its own folders (``R/metrics.csv``, ``R/logs/x`` — through any symbolic link),
    and a path whose folder cannot be written (read-only, ``/proc``, a parent that is a file). Writes nothing
    that outlives the call (one empty probe file in the target's folder). Returns the path (``~`` expanded).

    Raises:
        RunFolderError: the message names the flag, the path and what to do.
    """
    shown, path, absolute = _named(path, flag, "a file name")
    if path.is_dir():
        raise RunFolderError(f"{flag} {shown} is a folder; give a file name, e.g. {absolute / 'out'}")
    if os.path.lexists(path) and not path.is_symlink() and not path.is_file():
        raise RunFolderError(f"{flag} {shown} is not a regular file (a device, pipe or socket); give a file name")
    for candidate in (absolute, absolute.parent.resolve() / absolute.name, absolute.resolve()):
        owned = _owned_by_a_run(candidate)
        if owned is not None:
            run, inside = owned
            what = f"overwrite {inside}" if len(inside.parts) == 1 else f"write into {inside.parts[0]}/"
            raise RunFolderError(f"{flag} {shown} would {what} of the run folder {run}, which strrnn train wrote; "
                                 "a run's files are never overwritten: choose another file name")
    _writable_from(absolute, flag, shown)
    return path


def check_output_folder(path: str | os.PathLike, flag: str) -> Path:
    """Validate a folder a tool will create or fill (``strrnn data download --root``) before anything is written:
    not an existing file, not inside a run folder's own files, and creatable (its first existing ancestor is a
    writable folder). Returns the path (``~`` expanded).

    Raises:
        RunFolderError: the message names the flag, the path and what to do.
    """
    shown, path, absolute = _named(path, flag, "a folder")
    if os.path.lexists(path) and not path.is_dir():
        raise RunFolderError(f"{flag} {shown} is an existing file, not a folder; choose another folder")
    if _owned_by_a_run(absolute.resolve()) is not None:
        raise RunFolderError(f"{flag} {shown} lies inside a run folder's own files; choose another folder")
    if path.is_dir():
        try:
            _probe(path, "probe")
        except OSError as err:
            raise RunFolderError(f"{flag} {shown}: cannot create files there ({err.strerror or err}); choose a "
                                 "writable folder") from None
    else:
        _writable_from(absolute, flag, shown)
    return path
