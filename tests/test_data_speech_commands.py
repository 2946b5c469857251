"""Speech Commands layout, label sets, split rule and bad-input handling (tiny generated trees)."""

import json
import math
import warnings

import numpy as np
import pytest
import soundfile as sf
from conftest_data import make_speech_tree, tone, write_wav

import strrnn.data as data
from strrnn.data.errors import CorruptAudioError, DatasetNotFoundError, EmptyClassError, LayoutError
from strrnn.data.speech_commands import GOOGLE12_WORDS, GOOGLE13_WORDS, V001_WORDS, which_set

OTHERS = ("bird", "wow")


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("sc") / "speech_commands_v0.01"
    return make_speech_tree(root, sorted(set(GOOGLE12_WORDS + GOOGLE13_WORDS + OTHERS)), per_word=10)


def setup(name, root, **kw):
    kw.setdefault("cache_dir", root.parent / f"cache-{name}")
    dm = data.get(name, root, progress=False, **kw)
    dm.setup()
    return dm


def count(ds, k):
    return int((ds.targets == k).sum())


def test_registry():
    assert set(data.names()) >= {
        "google12",
        "google13",
        "google30",
        "google35",
        "speech_commands",
        "fsdd",
        "har2",
        "har6",
        "mnist5k",
        "digits",
    }
    assert data.names() == list(data.DATASETS)
    with pytest.raises(ValueError, match="google12.*fsdd"):
        data.get("google99")


def test_which_set_is_a_stable_function_of_the_speaker():
    names = [f"{i:08x}_nohash_{k}.wav" for i in range(400) for k in range(2)]
    for i in range(0, len(names), 2):
        assert which_set(names[i]) == which_set(names[i + 1]) == which_set("yes/" + names[i])
    got = [which_set(n) for n in names[::2]]
    assert 0.03 < got.count("validation") / len(got) < 0.2 and 0.03 < got.count("testing") / len(got) < 0.2


def test_google12(tree):
    dm = setup("google12", tree)
    assert dm.class_names == ["_silence_", "_unknown_", *GOOGLE12_WORDS]
    assert dm.num_classes == 12 and dm.num_features == 32 and dm.input_shape == (99, 32)
    # per split: ceil(10%) of the keyword clips as _silence_ and as _unknown_
    for ds, per_word in ((dm.train_set, 6), (dm.val_set, 2), (dm.test_set, 2)):
        n_known = 10 * per_word
        assert count(ds, 0) == math.ceil(0.1 * n_known) and count(ds, 1) == math.ceil(0.1 * n_known)
        assert len(ds) == n_known + 2 * math.ceil(0.1 * n_known)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (dm.batch_size if len(dm.train_set) >= 100 else len(dm.train_set), 99, 32)
    assert x.dtype.is_floating_point and x.dtype == __import__("torch").float32
    xs, ys = dm.test_set[0]
    assert tuple(xs.shape) == (99, 32) and isinstance(ys, int)
    # same seed -> same unknown/silence selection; the cache is reused
    dm2 = setup("google12", tree)
    assert all(dm2.cache_hits.values())
    np.testing.assert_array_equal(dm.train_set.targets, dm2.train_set.targets)


def test_google13_negative_class_holds_every_other_word(tree):
    dm = setup("google13", tree)
    assert dm.class_names == ["_unknown_", *GOOGLE13_WORDS]
    others = len(set(GOOGLE12_WORDS + OTHERS) - set(GOOGLE13_WORDS))
    assert count(dm.train_set, 0) == 6 * others
    assert len(dm.train_set) + len(dm.val_set) + len(dm.test_set) == 10 * (12 + others)


def test_user_word_list_and_options(tree):
    dm = setup("speech_commands", tree, words=["yes", "no"], features="mfcc", alignment="center", batch_size=7)
    assert dm.class_names == ["yes", "no"] and dm.input_shape == (99, 13)
    x, _ = next(iter(dm.train_dataloader()))
    assert x.shape == (7, 99, 13)


def test_normalization_is_from_train_and_reusable(tree):
    dm = setup("speech_commands", tree, words=["yes", "no", "up"])
    norm = json.loads(json.dumps(dm.normalization))
    assert len(norm["mean"]) == len(norm["std"]) == 32
    xs = np.stack([dm.train_set[i][0].numpy() for i in range(len(dm.train_set))])
    np.testing.assert_allclose(xs.reshape(-1, 32).mean(0), 0, atol=1e-3)
    np.testing.assert_allclose(xs.reshape(-1, 32).std(0), 1, atol=1e-2)
    dm2 = setup("speech_commands", tree, words=["yes", "no", "up"], normalization=norm)
    np.testing.assert_allclose(dm2.test_set[0][0], dm.test_set[0][0], atol=1e-5)
    assert dm.state_dict()["normalization"] == dm.normalization


def test_missing_root_names_path_and_how_to_obtain(tmp_path):
    root = tmp_path / "nowhere"
    with pytest.raises(DatasetNotFoundError) as e:
        setup("google12", root)
    msg = str(e.value)
    assert str(root) in msg and "download=True" in msg and "strrnn.data.synthesize" in msg


def test_partial_layout_names_what_is_missing(tmp_path, tree):
    # google30 needs 30 word folders; the tree has only some
    with pytest.raises(LayoutError) as e:
        setup("google30", tree)
    missing = set(V001_WORDS) - set(GOOGLE12_WORDS + GOOGLE13_WORDS + OTHERS)
    assert all(f"{w}/" in str(e.value) for w in missing)
    root = make_speech_tree(tmp_path / "p", ["yes", "no"], per_word=4, background=False)
    (root / "testing_list.txt").unlink()
    with pytest.raises(LayoutError, match="testing_list.txt"):
        setup("speech_commands", root, words=["yes", "no"])
    (root / "testing_list.txt").write_text("")
    with pytest.raises(LayoutError, match="_background_noise_"):
        setup("speech_commands", root, words=["yes", "no"], silence=True)


def test_corrupt_wav_is_skipped_counted_and_reported(tmp_path):
    root = make_speech_tree(tmp_path / "c", ["yes", "no"], per_word=6, background=False)
    (root / "yes" / "broken_nohash_0.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    good = root / "no" / "trunc_nohash_0.wav"
    write_wav(good, tone(500))
    good.write_bytes(good.read_bytes()[:30])  # header cut short
    with pytest.warns(UserWarning, match="skipped 2 unreadable"):
        dm = setup("speech_commands", root, words=["yes", "no"])
    assert len(dm.bad_files) == 2 and len(dm.train_set) == 2 * 6 - 4  # 2 val + 2 test listed clips
    with pytest.raises(CorruptAudioError, match="broken_nohash_0.wav"):
        setup("speech_commands", root, words=["yes", "no"], strict=True)


def test_stereo_and_8k_clips_are_accepted(tmp_path):
    root = make_speech_tree(tmp_path / "s", ["yes", "no"], per_word=4, background=False)
    y = tone(700, seconds=1.0)
    sf.write(root / "yes" / "stereo_nohash_0.wav", np.stack([y, y], 1), 16000, subtype="PCM_16")
    write_wav(root / "no" / "eightk_nohash_0.wav", tone(700, seconds=1.0, sr=8000), sr=8000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no file may be skipped
        dm = setup("speech_commands", root, words=["yes", "no"])
    assert not dm.bad_files and len(dm.train_set) == 2 * 2 + 2


def test_empty_class_is_an_error(tmp_path):
    root = make_speech_tree(tmp_path / "e", ["yes", "no"], per_word=4, background=False)
    for p in (root / "no").glob("*.wav"):
        p.unlink()
    with pytest.raises(EmptyClassError, match=r"\['no'\]"), pytest.warns(UserWarning, match="missing clips"):
        setup("speech_commands", root, words=["yes", "no"])
