"""Feature cache: reuse, invalidation on file/config change, corruption, atomicity."""

import json
import os

import numpy as np
import pytest
from conftest_data import tone, write_wav

from strrnn.data import cached_features, feature_config
from strrnn.data.audio import Item


@pytest.fixture
def clips(tmp_path):
    return [Item(str(write_wav(tmp_path / "w" / f"c{i}.wav", tone(300 + 200 * i)))) for i in range(4)]


def entries(d):
    return sorted(p.name for p in d.iterdir())


def test_cold_then_hit_memory_mapped(tmp_path, clips):
    cfg, cache = feature_config("logmel32"), tmp_path / "cache"
    a, bad, hit = cached_features(clips, cfg, cache, "t.train", root=tmp_path, progress=False)
    assert not hit and not bad and a.shape == (4, 99, 32)
    b, _, hit = cached_features(clips, cfg, cache, "t.train", root=tmp_path, progress=False)
    assert hit and isinstance(b, np.memmap)
    np.testing.assert_array_equal(a, b)
    names = entries(cache)
    assert len(names) == 2 and not [n for n in names if n.endswith(".tmp")]
    meta = json.loads(next(cache.glob("*.json")).read_text())
    assert meta["config"]["n_mels"] == 32 and meta["count"] == 4


def test_stale_cache_is_rebuilt_when_a_file_changes(tmp_path, clips):
    cfg, cache = feature_config("logmel32"), tmp_path / "cache"
    a, _, _ = cached_features(clips, cfg, cache, "t.train", root=tmp_path, progress=False)
    a = np.array(a)
    write_wav(clips[0].path, tone(3000))  # new content (size may be equal: mtime differs)
    st = os.stat(clips[0].path)
    os.utime(clips[0].path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    b, _, hit = cached_features(clips, cfg, cache, "t.train", root=tmp_path, progress=False)
    assert not hit
    assert not np.allclose(a[0], b[0]) and np.allclose(a[1:], b[1:])
    assert len(entries(cache)) == 2  # the stale entry was removed


def test_config_or_file_list_change_selects_a_new_entry(tmp_path, clips):
    cache = tmp_path / "cache"
    cached_features(clips, feature_config("logmel32"), cache, "t.train", root=tmp_path, progress=False)
    f40, _, hit = cached_features(clips, feature_config("logmel40"), cache, "t.train", root=tmp_path, progress=False)
    assert not hit and f40.shape == (4, 99, 40)
    f3, _, hit = cached_features(clips[:3], feature_config("logmel40"), cache, "t.train", root=tmp_path, progress=False)
    assert not hit and f3.shape == (3, 99, 40)


def test_corrupt_cache_file_is_rebuilt(tmp_path, clips):
    cfg, cache = feature_config("logmel32"), tmp_path / "cache"
    a, _, _ = cached_features(clips, cfg, cache, "t.train", root=tmp_path, progress=False)
    a = np.array(a)
    npy = next(cache.glob("*.npy"))
    npy.write_bytes(npy.read_bytes()[:200])  # truncated
    b, _, hit = cached_features(clips, cfg, cache, "t.train", root=tmp_path, progress=False)
    assert not hit
    np.testing.assert_array_equal(a, b)


def test_failed_build_leaves_no_partial_entry(tmp_path, clips, monkeypatch):
    import strrnn.data.cache as cache_mod

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(cache_mod, "extract_features", boom)
    cache = tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        cached_features(clips, feature_config("logmel32"), cache, "t.train", root=tmp_path, progress=False)
    assert entries(cache) == []


def test_simulated_full_disk_is_a_clear_error_and_leaves_nothing(tmp_path, clips, monkeypatch):
    import errno

    from strrnn.fileio import DiskFullError

    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_space)
    cache = tmp_path / "cache"
    with pytest.raises(DiskFullError, match="disk full while writing .*t.train-.*npy"):
        cached_features(clips, feature_config("logmel32"), cache, "t.train", root=tmp_path, progress=False)
    assert entries(cache) == []


def _mount_tmpfs(path, size):
    import subprocess

    path.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return result.returncode == 0


def test_real_full_disk_raises_instead_of_sigbus(tmp_path, clips):
    """A cache folder on a 64 KiB tmpfs: 4 clips x 99 x 32 float32 = 50 KiB fits; 40 clips do not."""
    import subprocess
    import sys

    mount = tmp_path / "small"
    if not _mount_tmpfs(mount, "64k"):
        pytest.skip("cannot mount a tmpfs here (needs root); the simulated ENOSPC test covers the logic")
    try:
        script = (
            "import sys; from strrnn.data import cached_features, feature_config; from strrnn.data.audio import Item\n"
            f"items = [Item({clips[0].path!r})] * 40\n"
            "try:\n"
            f"    cached_features(items, feature_config('logmel32'), {str(mount)!r}, 't.train', progress=False)\n"
            "except OSError as err:\n"
            "    print('ERROR', err); sys.exit(3)\n"
        )
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
        assert result.returncode == 3, (result.returncode, result.stderr[-2000:])  # not -SIGBUS (135)
        assert "disk full while writing" in result.stdout
        assert entries(mount) == []
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_stale_temporary_of_a_dead_process_is_removed(tmp_path, clips):
    import subprocess
    import sys

    cache = tmp_path / "cache"
    cache.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = cache / f".t.train-abc.pid{dead.pid}.x1.npy.tmp"
    live = cache / f".t.train-abc.pid{os.getpid()}.x2.npy.tmp"
    stale.write_bytes(b"half")
    live.write_bytes(b"in progress")
    cached_features(clips, feature_config("logmel32"), cache, "t.train", root=tmp_path, progress=False)
    assert not stale.exists() and live.exists()


def test_two_roots_of_one_dataset_keep_their_own_entries(tmp_path):
    cfg, cache = feature_config("logmel32"), tmp_path / "cache"
    roots = [tmp_path / "a", tmp_path / "b"]
    lists = [[Item(str(write_wav(r / "w" / f"c{i}.wav", tone(300 + 100 * i + 50 * k)))) for i in range(2)]
             for k, r in enumerate(roots)]
    for root, items in zip(roots, lists):
        cached_features(items, cfg, cache, "fsdd.train", root=root, progress=False)
    for root, items in zip(roots, lists):  # both still cached: neither evicted the other
        _, _, hit = cached_features(items, cfg, cache, "fsdd.train", root=root, progress=False)
        assert hit
    assert len(list(cache.glob("*.npy"))) == 2


# --- issue 23: entries of other feature settings and clip lists stay, within a size cap -----------------------------
def test_switching_features_or_clip_lists_keeps_every_entry(tmp_path, clips):
    cache = tmp_path / "cache"
    views = [(feature_config("logmel32"), clips), (feature_config("mfcc"), clips),  # --features mfcc, then back
             (feature_config("logmel32"), clips[:2])]  # the same split of another clip list (evaluate --all-clips)
    for cfg, items in views:
        assert not cached_features(items, cfg, cache, "t.test", root=tmp_path, progress=False)[2]
    for cfg, items in views:
        assert cached_features(items, cfg, cache, "t.test", root=tmp_path, progress=False)[2]
    assert len(list(cache.glob("*.npy"))) == 3


def test_the_cap_evicts_the_least_recently_used_entries_never_the_new_one(tmp_path, clips):
    from strrnn.data.cache import evict_least_recently_used

    cache, cfg = tmp_path / "cache", feature_config("logmel32")
    for n in (1, 2, 3):  # three entries of one clip list each, written in this order
        cached_features(clips[:n], cfg, cache, "t.train", root=tmp_path, progress=False)
    metas = sorted(cache.glob("*.json"), key=lambda p: json.loads(p.read_text())["count"])
    for age, meta in zip((300, 200, 100), metas):  # last used 300, 200 and 100 s ago
        os.utime(meta, (meta.stat().st_atime, meta.stat().st_mtime - age))
    assert cached_features(clips[:1], cfg, cache, "t.train", root=tmp_path, progress=False)[2]  # a use: now newest
    size = sum(p.stat().st_size for p in cache.iterdir())
    one = size // 3
    evict_least_recently_used(cache, size - one // 2)
    left = sorted(json.loads(p.read_text())["count"] for p in cache.glob("*.json"))
    assert left == [1, 3]  # the entry of two clips was the least recently used
    _, _, hit = cached_features(clips, cfg, cache, "t.train", root=tmp_path, progress=False, max_bytes=1)
    assert not hit and [json.loads(p.read_text())["count"] for p in cache.glob("*.json")] == [4]
    assert len(list(cache.glob("*.npy"))) == 1  # the new entry stays, even alone above the cap


def test_the_cap_comes_from_the_environment(monkeypatch):
    from strrnn.data.cache import DEFAULT_CACHE_MAX_MB, cache_limit

    monkeypatch.delenv("STRRNN_CACHE_MAX_MB", raising=False)
    assert cache_limit() == DEFAULT_CACHE_MAX_MB * 2**20
    monkeypatch.setenv("STRRNN_CACHE_MAX_MB", "1.5")
    assert cache_limit() == int(1.5 * 2**20)
    for bad in ("0", "-3", "lots", "inf"):
        monkeypatch.setenv("STRRNN_CACHE_MAX_MB", bad)
        with pytest.raises(ValueError, match="STRRNN_CACHE_MAX_MB must be a number of megabytes"):
            cache_limit()
