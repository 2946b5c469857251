"""Feature-extraction throughput for 1-s 16 kHz clips (clips/s), cold and cached.

Generates N one-second 16 kHz mono WAVs (speech-like: harmonic tones + noise) in a temporary folder,
then times, in one process:
  * cold   -- read + log-mel (99 x 32) + write the memory-mapped cache, for 1 and for all worker threads;
  * cached -- the same call again (cache hit: key check + np.load(mmap)), and a full pass reading
              every cached row through the dataset the loaders use.
Optionally also the real FSDD corpus (8 kHz clips: includes resampling to 16 kHz).

    python -m benchmarks.feature_speed [--clips 3000] [--workers 2] [--fsdd ../shared/data/fsdd]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from strrnn.data import cached_features, feature_config
from strrnn.data.audio import Item
from strrnn.data.base import ArrayDataset
from strrnn.data.features import compute_features


def make_clips(folder: Path, n: int, seed: int = 0) -> list[Item]:
    rng = np.random.default_rng(seed)
    t = np.arange(16000) / 16000
    items = []
    for i in range(n):
        f0 = rng.uniform(90, 250)
        y = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6)) * np.hanning(16000)
        y = 0.2 * y / np.abs(y).max() + 0.01 * rng.standard_normal(16000)
        p = folder / f"clip{i:05d}.wav"
        sf.write(p, y.astype(np.float32), 16000, subtype="PCM_16")
        items.append(Item(str(p)))
    return items


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def bench(items, root, cfg, workers, label):
    rows = []
    for w in sorted({1, workers}):
        cache = Path(tempfile.mkdtemp(prefix="featcache-"))
        dt, (arr, bad, hit) = timed(lambda c=cache, w=w: cached_features(items, cfg, c, "bench", root=root,
                                                                         workers=w, progress=False))
        assert not hit and not bad
        rows.append((label, f"cold, {w} worker(s)", len(items), dt))
        dt, (arr, _, hit) = timed(lambda c=cache, w=w: cached_features(items, cfg, c, "bench", root=root,
                                                                       workers=w, progress=False))
        assert hit
        rows.append((label, f"cached: open (key + mmap), {w} worker(s)", len(items), dt))
        ds = ArrayDataset(arr, np.zeros(len(items), np.int64), mean=np.zeros(32), std=np.ones(32))
        dt, _ = timed(lambda ds=ds: [ds[i] for i in range(len(ds))])
        rows.append((label, "cached: read every sample (dataset)", len(items), dt))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", type=int, default=3000)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--fsdd", default=None, help="FSDD root (with recordings/) to time real 8 kHz clips too")
    a = ap.parse_args()
    cfg = feature_config("logmel32")
    compute_features(np.zeros((2, 16000), np.float32), cfg)  # warm librosa's filter cache
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        items = make_clips(d, a.clips)
        rows = bench(items, d, cfg, a.workers, "synthetic 1-s 16 kHz")
    if a.fsdd:
        fs = sorted((Path(a.fsdd) / "recordings").glob("*.wav"))
        rows += bench([Item(str(p)) for p in fs], Path(a.fsdd), cfg, a.workers, "FSDD 8 kHz -> 16 kHz")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load avg "
          f"{os.getloadavg()[0]:.1f}; features {cfg.shape} logmel32")
    print("| clips | mode | n | seconds | clips/s |")
    print("|---|---|---|---|---|")
    for label, mode, n, dt in rows:
        print(f"| {label} | {mode} | {n} | {dt:.3f} | {n / dt:,.0f} |")


if __name__ == "__main__":
    main()
