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
