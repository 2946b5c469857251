"""On-disk feature cache: one memory-mappable ``.npy`` per (dataset split, file list, feature config).

Each entry lives in a *slot*: the split's tag, the data root, the feature configuration (with
:data:`FEATURE_VERSION`) and the clips it covers (path relative to the root, window, gain). Within its slot an
entry is keyed by every clip's size and modification time, so editing a file selects a fresh entry and the
stale one of the same slot is deleted once the new one is complete. Entries of other slots stay: switching
``--features`` back and forth, or scoring a whole folder (``evaluate --all-clips``) and its speaker split in turn,
reuses each one's features instead of evicting them.

Every cache folder is kept under a size cap (:func:`cache_limit`: ``$STRRNN_CACHE_MAX_MB`` megabytes, default
:data:`DEFAULT_CACHE_MAX_MB`): once a new entry is written, the least recently used entries (by the time of their
last use, recorded on their JSON sidecar) are deleted until the folder fits, never the entry just written.

Writes are atomic: the array is filled in a temporary file which is ``os.replace``-d into place, then the JSON
sidecar (the commit marker) likewise. The temporary file's blocks are allocated before it is memory-mapped, so
a full disk is an error (:class:`DiskFullError` naming the file) rather than a SIGBUS; temporary files left by a
killed process are removed on the next use.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from pathlib import Path

import numpy as np

from ..fileio import atomic_write_text, raise_if_disk_full
from .audio import Item
from .features import FeatureConfig, extract_features

_TMP_SUFFIX = ".npy.tmp"
_PID = re.compile(r"\.pid(\d+)\.")
#: the size cap of a cache folder when ``$STRRNN_CACHE_MAX_MB`` is unset: room for several feature settings of the
#: full Speech Commands archive (about 1 GB per setting and split set)
DEFAULT_CACHE_MAX_MB = 4096
# an entry's .npy without its sidecar is either being committed right now or left by a killed process
_ORPHAN_AGE_S = 3600.0


def cache_limit() -> int:
    """The size cap of a cache folder in bytes: ``$STRRNN_CACHE_MAX_MB`` (megabytes; a number > 0) or
    :data:`DEFAULT_CACHE_MAX_MB`. Raises ``ValueError`` naming the variable for any other value."""
    text = os.environ.get("STRRNN_CACHE_MAX_MB", "").strip()
    if not text:
        return DEFAULT_CACHE_MAX_MB * 2**20
    try:
        megabytes = float(text)
    except ValueError:
        megabytes = float("nan")
    if not megabytes > 0 or megabytes == float("inf"):
        raise ValueError(f"$STRRNN_CACHE_MAX_MB must be a number of megabytes > 0, got {text!r}")
    return int(megabytes * 2**20)


def cache_slot(items: list[Item], cfg: FeatureConfig, tag: str, root: str | os.PathLike | None = None) -> str:
    """What an entry is features *of* (tag, data root, feature configuration, clips) -- not the clips' contents:
    entries of one slot replace each other, entries of different slots coexist."""
    h = hashlib.sha256(f"{tag}\n{Path(root).resolve() if root is not None else ''}\n{cfg.digest()}\n".encode())
    for it in items:
        rel = os.path.relpath(it.path, root) if root is not None else os.path.abspath(it.path)
        h.update(f"{rel}|{it.offset}|{it.length}|{it.gain!r}\n".encode())
    return h.hexdigest()


def cache_key(items: list[Item], cfg: FeatureConfig, root: str | os.PathLike | None = None) -> str:
    """The key of an entry: the feature configuration and every clip with its size and modification time."""
    h = hashlib.sha256(cfg.digest().encode())
    for it in items:
        try:
            st = os.stat(it.path)
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        rel = os.path.relpath(it.path, root) if root is not None else os.path.abspath(it.path)
        h.update(f"{rel}|{it.offset}|{it.length}|{it.gain!r}|{stamp}\n".encode())
    return h.hexdigest()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temporaries(cache_dir: Path, max_age_s: float = 3600.0) -> list[Path]:
    """Delete half-written cache files whose writer is gone; return them.

    A temporary file carries its writer's pid; it is stale when that process no longer exists (kill -9, a
    crash). Files from older versions, without a pid, are stale once ``max_age_s`` old.
    """
    removed = []
    for tmp in cache_dir.glob(f".*{_TMP_SUFFIX}"):
        match = _PID.search(tmp.name)
        try:
            stale = not _alive(int(match.group(1))) if match else time.time() - tmp.stat().st_mtime > max_age_s
            if stale:
                tmp.unlink()
                removed.append(tmp)
        except OSError:
            continue  # another process removed or replaced it meanwhile
    return removed


def _preallocated_memmap(path: str, shape: tuple[int, ...]) -> np.memmap:
    """An ``.npy`` file of float32 ``shape`` memory-mapped for writing, its blocks allocated on disk first.

    Writing into a memory map over a sparse file on a full disk kills the process with SIGBUS; allocating the
    blocks up front turns that into an ``OSError`` (ENOSPC) here.
    """
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
    size = os.path.getsize(path)
    with open(path, "rb+") as handle:
        if hasattr(os, "posix_fallocate"):
            os.posix_fallocate(handle.fileno(), 0, size)
        else:  # no fallocate (macOS): write the zeros
            header = size - out.nbytes
            handle.seek(header)
            chunk = bytes(1 << 20)
            for start in range(header, size, len(chunk)):
                handle.write(chunk[: min(len(chunk), size - start)])
    return out


def _entries(cache_dir: Path) -> list[tuple[float, int, list[Path]]]:
    """Every entry of ``cache_dir`` as ``(last use, bytes, files)``; a ``.npy`` without its sidecar counts once it
    is old enough not to be a commit in progress."""
    out = []
    for npy in cache_dir.glob("*.npy"):
        meta = npy.with_suffix(".json")
        try:
            size = npy.stat().st_size
            if meta.exists():
                out.append((meta.stat().st_mtime, size + meta.stat().st_size, [meta, npy]))
            elif time.time() - npy.stat().st_mtime > _ORPHAN_AGE_S:
                out.append((0.0, size, [npy]))
        except OSError:
            continue  # removed by another process meanwhile
    return out


def evict_least_recently_used(cache_dir: str | os.PathLike, limit: int, keep: str = "") -> list[Path]:
    """Delete the least recently used entries of ``cache_dir`` until it holds at most ``limit`` bytes; the entry
    named ``keep`` (a stem) stays whatever its size. Returns the deleted files."""
    entries = sorted(_entries(Path(cache_dir)))
    total = sum(size for _, size, _ in entries)
    removed = []
    for _, size, files in entries:
        if total <= limit:
            break
        if files[-1].stem == keep:
            continue
        for file in files:  # the sidecar first: without it, the entry is never read again
            file.unlink(missing_ok=True)
            removed.append(file)
        total -= size
    return removed


def _touch(meta_path: Path) -> None:
    """Record a use of an entry on its sidecar's modification time (what eviction orders by)."""
    try:
        os.utime(meta_path)
    except OSError:
        pass  # a read-only cache is still a cache


def _load(npy: Path, meta_path: Path, key: str, n: int, shape: tuple[int, int]):
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("key") != key:
            return None
        arr = np.load(npy, mmap_mode="r")
        if arr.shape != (n, *shape) or arr.dtype != np.float32:
            return None
        return arr, [(int(i), str(w)) for i, w in meta.get("bad", [])]
    except (OSError, ValueError, json.JSONDecodeError):
        return None


def cached_features(
    items: list[Item],
    cfg: FeatureConfig,
    cache_dir: str | os.PathLike | None,
    tag: str,
    root: str | os.PathLike | None = None,
    workers: int | None = None,
    progress: bool = True,
    max_bytes: int | None = None,
) -> tuple[np.ndarray, list[tuple[int, str]], bool]:
    """Features of ``items`` from the cache, computing (in parallel) and storing them when absent.

    Returns ``(features (N, T, F) float32 -- memory-mapped when cached, bad, hit)``; ``bad`` lists
    ``(index, reason)`` for unreadable clips (zero rows) and ``hit`` says whether the cache was reused.
    ``cache_dir=None`` computes in memory without caching. ``max_bytes``: the folder's size cap (default
    :func:`cache_limit`), enforced after a new entry is written by evicting the least recently used ones.
    """
    if cache_dir is None:
        arr, bad = extract_features(items, cfg, workers=workers, progress=progress, desc=tag)
        return arr, bad, False
    limit = cache_limit() if max_bytes is None else int(max_bytes)
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = cache_key(items, cfg, root)
    slot = cache_slot(items, cfg, tag, root)[:12]
    stem = f"{tag}-{slot}-{key[:20]}"
    npy, meta_path = cache_dir / f"{stem}.npy", cache_dir / f"{stem}.json"
    if npy.exists() and meta_path.exists():
        hit = _load(npy, meta_path, key, len(items), cfg.shape)
        if hit is not None:
            _touch(meta_path)
            return hit[0], hit[1], True
    meta_path.unlink(missing_ok=True)
    remove_stale_temporaries(cache_dir)
    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=f".{stem}.pid{os.getpid()}.", suffix=_TMP_SUFFIX)
    os.close(fd)
    try:
        out = _preallocated_memmap(tmp, (len(items), *cfg.shape))
        _, bad = extract_features(items, cfg, out=out, workers=workers, progress=progress, desc=tag)
        out.flush()
        del out
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; caches are plain shareable files
        os.replace(tmp, npy)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        raise_if_disk_full(err, npy)
        raise
    meta = {"key": key, "tag": tag, "count": len(items), "config": cfg.to_dict(), "bad": bad}
    atomic_write_text(meta_path, json.dumps(meta))
    # the slot's previous entry is stale (its files changed); entries named by older versions are left to the
    # size cap, since a process of such a version may still be reading them
    stale = re.compile(re.escape(f"{tag}-{slot}-") + r"[0-9a-f]{20}\.(npy|json)")
    for old in cache_dir.iterdir():
        if stale.fullmatch(old.name) and old.name not in (npy.name, meta_path.name):
            old.unlink(missing_ok=True)
    evict_least_recently_used(cache_dir, limit, keep=stem)
    return np.load(npy, mmap_mode="r"), bad, False
