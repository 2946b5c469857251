"""On-disk feature cache: one memory-mappable ``.npy`` per (dataset split, file list, feature config).

The key hashes the feature configuration (with :data:`FEATURE_VERSION`) and, for every clip, its
path relative to the dataset root, window, gain, size and modification time, so editing, adding or
removing a file, or changing any feature option, selects a fresh entry; stale entries of the same
tag are deleted once the new one is complete. Writes are atomic: the array is filled in a temporary
file which is ``os.replace``-d into place, then the JSON sidecar (the commit marker) likewise. The temporary
file's blocks are allocated before it is memory-mapped, so a full disk is an error (:class:`DiskFullError`
naming the file) rather than a SIGBUS; temporary files left by a killed process are removed on the next use.
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


def cache_key(items: list[Item], cfg: FeatureConfig, root: str | os.PathLike | None = None) -> str:
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
) -> tuple[np.ndarray, list[tuple[int, str]], bool]:
    """Features of ``items`` from the cache, computing (in parallel) and storing them when absent.

    Returns ``(features (N, T, F) float32 -- memory-mapped when cached, bad, hit)``; ``bad`` lists
    ``(index, reason)`` for unreadable clips (zero rows) and ``hit`` says whether the cache was reused.
    ``cache_dir=None`` computes in memory without caching.
    """
    if cache_dir is None:
        arr, bad = extract_features(items, cfg, workers=workers, progress=progress, desc=tag)
        return arr, bad, False
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = cache_key(items, cfg, root)
    # entries are scoped by the data root: two copies of a dataset (same tag) must not evict each other
    scope = hashlib.sha256(str(Path(root).resolve() if root is not None else "").encode()).hexdigest()[:8]
    stem = f"{tag}-{scope}-{key[:20]}"
    npy, meta_path = cache_dir / f"{stem}.npy", cache_dir / f"{stem}.json"
    if npy.exists() and meta_path.exists():
        hit = _load(npy, meta_path, key, len(items), cfg.shape)
        if hit is not None:
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
    stale = re.compile(re.escape(tag) + rf"-({scope}-)?[0-9a-f]{{20}}\.(npy|json)")  # (unscoped: older versions)
    for old in cache_dir.iterdir():  # drop stale entries of this tag and root
        if stale.fullmatch(old.name) and old.name not in (npy.name, meta_path.name):
            old.unlink(missing_ok=True)
    return np.load(npy, mmap_mode="r"), bad, False
