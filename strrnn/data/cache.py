"""On-disk feature cache: one memory-mappable ``.npy`` per (dataset split, file list, feature config).

The key hashes the feature configuration (with :data:`FEATURE_VERSION`) and, for every clip, its
path relative to the dataset root, window, gain, size and modification time, so editing, adding or
removing a file, or changing any feature option, selects a fresh entry; stale entries of the same
tag are deleted once the new one is complete. Writes are atomic: the array is filled in a temporary
file which is ``os.replace``-d into place, then the JSON sidecar (the commit marker) likewise.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path

import numpy as np

from .audio import Item
from .features import FeatureConfig, extract_features


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


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; caches are plain shareable files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    stem = f"{tag}-{key[:20]}"
    npy, meta_path = cache_dir / f"{stem}.npy", cache_dir / f"{stem}.json"
    if npy.exists() and meta_path.exists():
        hit = _load(npy, meta_path, key, len(items), cfg.shape)
        if hit is not None:
            return hit[0], hit[1], True
    meta_path.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=f".{stem}.", suffix=".npy.tmp")
    os.close(fd)
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(len(items), *cfg.shape))
        _, bad = extract_features(items, cfg, out=out, workers=workers, progress=progress, desc=tag)
        out.flush()
        del out
        os.chmod(tmp, 0o644)
        os.replace(tmp, npy)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    meta = {"key": key, "tag": tag, "count": len(items), "config": cfg.to_dict(), "bad": bad}
    _atomic_write_text(meta_path, json.dumps(meta))
    stale = re.compile(re.escape(tag) + r"-[0-9a-f]{20}\.(npy|json)")
    for old in cache_dir.iterdir():  # drop stale entries of this tag
        if stale.fullmatch(old.name) and old.name not in (npy.name, meta_path.name):
            old.unlink(missing_ok=True)
    return np.load(npy, mmap_mode="r"), bad, False
