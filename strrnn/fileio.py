"""Safe file I/O: atomic writes (a reader sees the old file or the complete new one, never half of either) and
checkpoint loads that never unpickle code.

Every file strrnn writes that a later step reads back (checkpoints, caches, run-folder files, exports) goes
through :func:`atomic_path`: the content is written to a temporary file in the destination's folder, flushed to
disk and ``os.replace``-d over the destination. A full disk surfaces as :class:`DiskFullError` naming the file,
and the temporary file is removed whatever goes wrong.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "DiskFullError", "CorruptCheckpointError", "atomic_path", "atomic_write_text", "atomic_write_bytes",
    "raise_if_disk_full", "load_checkpoint_file",
]


class DiskFullError(OSError):
    """The disk (or quota) filled up while writing a file; nothing half-written was left behind."""

    def __str__(self) -> str:
        return str(self.strerror)


def raise_if_disk_full(err: BaseException, path: str | os.PathLike) -> None:
    """Re-raise ``err`` as :class:`DiskFullError` naming ``path`` when it comes from a full disk; else return.

    Recognised: ENOSPC/EDQUOT anywhere in the exception chain, and torch's short-write error ("unexpected pos"),
    which is how ``torch.save`` reports a full disk.
    """
    cause = err
    while cause is not None and not isinstance(cause, OSError):
        cause = cause.__cause__ or cause.__context__
    codes = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
    message = str(err).lower()
    full = (isinstance(cause, OSError) and cause.errno in codes) or "no space left" in message
    if full or "unexpected pos" in message:
        try:
            free = f" ({shutil.disk_usage(Path(path).parent).free / 2**20:.1f} MiB free)"
        except OSError:
            free = ""
        raise DiskFullError(errno.ENOSPC, f"disk full while writing {path}{free}: free some space (or choose "
                                          "another folder) and run again; nothing half-written was kept") from err


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, mode: int = 0o644) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    Write the file at the yielded path (any writer: ``torch.save``, ``np.save``, ``open``). On an exception
    the temporary file is deleted and ``path`` is untouched; ENOSPC/EDQUOT become :class:`DiskFullError`.
    ``mode``: permissions of the final file (``mkstemp`` creates 0600 files; results are plain shareable files).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        raise_if_disk_full(err, path)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


class CorruptCheckpointError(ValueError):
    """A checkpoint or exported file cannot be read (truncated, corrupt, or not a strrnn file)."""


def load_checkpoint_file(path: str | os.PathLike, map_location=None):
    """``torch.load(path, weights_only=True)`` with a one-line error for an unreadable file.

    Raises:
        CorruptCheckpointError: naming the file and what to do (never suggesting ``weights_only=False``:
            unpickling arbitrary objects from a file is how a checkpoint executes code).
    """
    import torch  # here, not at the top: the command lines write files through this module before torch is needed

    try:
        return torch.load(path, map_location=map_location or "cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # noqa: BLE001 - torch raises RuntimeError, UnpicklingError, EOFError, ...
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if "weights_only" in first or "Weights only load failed" in first:
            first = "it holds objects other than tensors and plain data"
        raise CorruptCheckpointError(
            f"cannot read {path}: {first[:160]}; the file is corrupt, truncated or not written by strrnn — "
            "delete it and train again (or --resume from an intact last.ckpt)"
        ) from None
