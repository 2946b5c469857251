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
    assert str(root) in msg and "download=True" in msg and "strrnn synthesize" in msg


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


# ---------------------------------------------------------------------------------------------------------
# The canonical test-set layout, list-path normalisation, empty splits, unreadable background noise
# ---------------------------------------------------------------------------------------------------------
from pathlib import Path  # noqa: E402

from strrnn.data.errors import EmptySplitError  # noqa: E402
from strrnn.data.speech_commands import detect_layout, speaker_of, speaker_split  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "speech_commands_sample"
needs_sample = pytest.mark.skipif(not (SAMPLE / "_unknown_").is_dir(), reason=f"Speech Commands sample not at {SAMPLE}")


def make_testset_tree(root, words=GOOGLE12_WORDS, speakers=40, per_speaker=2,
                      unknown_words=("bed", "cat", "dog", "one", "six", "two", "wow"), silence=12):
    """Google's test-set layout: word folders, ``_unknown_/<word>_<speaker>_nohash_<n>.wav``, ``_silence_/<n>.wav``."""
    for s in range(speakers):
        spk = f"{s * 2654435761 % 2**32:08x}"
        for k in range(per_speaker):
            for i, w in enumerate(words):
                write_wav(root / w / f"{spk}_nohash_{k}.wav", tone(300 + 40 * i, seconds=1.0, seed=s))
            w = unknown_words[s % len(unknown_words)]
            write_wav(root / "_unknown_" / f"{w}_{spk}_nohash_{k}.wav", tone(2000, seconds=1.0, seed=s))
    rng = np.random.default_rng(0)
    for n in range(silence):
        write_wav(root / "_silence_" / f"{n}.wav", (0.05 * rng.standard_normal(16000)).astype(np.float32))
    return root


@pytest.fixture(scope="module")
def testset(tmp_path_factory):
    return make_testset_tree(tmp_path_factory.mktemp("ts") / "speech_commands_test_set_v0.02")


def speakers_by_split(dm, splits):
    return {s: {speaker_of(it.path) for it in items} for s, (items, _) in splits.items()}


def test_layout_detection(tree, testset, tmp_path):
    assert detect_layout(tree) == "archive" and detect_layout(testset) == "testset"
    assert data.get("google12", testset).layout == "testset"
    (tmp_path / "empty").mkdir()
    assert detect_layout(tmp_path / "empty") == "archive"  # scan() then names the missing list files
    with pytest.raises(DatasetNotFoundError):
        detect_layout(tmp_path / "nowhere")


def test_speaker_of_reads_both_layouts():
    assert speaker_of("yes/0a7c2a8d_nohash_1.wav") == "0a7c2a8d"
    assert speaker_of("_unknown_/bed_0a7c2a8d_nohash_0.wav") == "0a7c2a8d"
    assert speaker_of("_silence_/17.wav") == "_silence_/17.wav"
    with pytest.raises(ValueError, match="not a Speech Commands clip name"):
        speaker_of("yes/whatever.wav")


def test_speaker_split_is_deterministic_disjoint_and_about_80_10_10():
    rng = np.random.default_rng(0)
    counts = {f"{i:08x}": int(rng.integers(1, 30)) for i in range(300)}
    split = speaker_split(counts)
    assert split == speaker_split(dict(reversed(list(counts.items()))))  # independent of the order given
    assert set(split) == set(counts) and set(split.values()) == {"train", "val", "test"}
    total = sum(counts.values())
    for name, goal in (("train", 0.8), ("val", 0.1), ("test", 0.1)):
        share = sum(c for s, c in counts.items() if split[s] == name) / total
        assert abs(share - goal) < 0.02, (name, share)
    # not the dataset's own rule: that one would call a different set of speakers "testing"
    ours = {s for s in counts if split[s] == "test"}
    assert ours != {s for s in counts if which_set(f"{s}_nohash_0.wav") == "testing"}
    with pytest.raises(ValueError):
        speaker_split(counts, 0.5, 0.6)


def test_testset_layout_google12_is_split_by_speaker(testset, caplog):
    dm = data.get("google12", testset, progress=False, cache_dir=testset.parent / "cache-ts")
    with caplog.at_level("INFO", logger="strrnn.data.speech_commands"):
        splits = dm._splits()
    assert "split by speaker" in caplog.text and "train" in caplog.text and "speakers" in caplog.text
    by = speakers_by_split(dm, splits)
    assert not (by["train"] & by["val"]) and not (by["train"] & by["test"]) and not (by["val"] & by["test"])
    n = {s: len(items) for s, (items, _) in splits.items()}
    total = 40 * 2 * 11 + 12
    assert sum(n.values()) == total  # every clip, once: ten words + _unknown_ + _silence_
    assert 0.7 < n["train"] / total < 0.88 and n["val"] > 0 and n["test"] > 0
    assert dm.split_summary["train"]["clips"] == n["train"]
    labels = np.concatenate([np.asarray(y) for _, y in splits.values()])
    assert np.bincount(labels, minlength=12)[0] == 12  # _silence_: the test set's own clips
    assert np.bincount(labels, minlength=12)[1] == 80  # _unknown_: every clip of _unknown_/
    dm.setup()
    assert dm.input_shape == (99, 32) and len(dm.train_set) == n["train"]


def test_testset_split_test_scores_every_clip(testset):
    with pytest.raises(ValueError, match="normalization"):
        data.get("google12", testset, testset_split="test", progress=False)._splits()
    norm = {"mean": [0.0] * 32, "std": [1.0] * 32}
    dm = data.get("google12", testset, testset_split="test", normalization=norm, progress=False,
                  cache_dir=testset.parent / "cache-all")
    dm.setup()
    assert len(dm.train_set) == len(dm.val_set) == 0 and len(dm.test_set) == 40 * 2 * 11 + 12
    with pytest.raises(ValueError, match="testset_split"):
        data.get("google12", testset, testset_split="half")


def test_google13_on_the_testset_layout_is_refused_for_training(testset):
    with pytest.raises(LayoutError, match=r"bed \(12\), cat \(12\).*google12.*strrnn evaluate"):
        data.get("google13", testset)._splits()
    norm = {"mean": [0.0] * 32, "std": [1.0] * 32}
    dm = data.get("google13", testset, testset_split="test", normalization=norm)
    with pytest.warns(UserWarning, match="accuracies rest on those few clips"):
        splits = dm._splits()
    assert len(splits["test"][0]) == 40 * 2 * 11  # _silence_ is not a google13 class


def test_testset_layout_missing_word_and_odd_names(tmp_path):
    root = make_testset_tree(tmp_path / "t", words=("yes", "no"), speakers=10, per_speaker=1)
    with pytest.raises(LayoutError, match="up/"):
        data.get("speech_commands", root, words=["yes", "up"])._splits()
    write_wav(root / "yes" / "notaclip.wav", tone(300))
    with pytest.warns(UserWarning, match="notaclip.wav"):
        splits = data.get("speech_commands", root, words=["yes", "no"])._splits()
    assert sum(len(items) for items, _ in splits.values()) == 20


def test_list_files_with_windows_separators(tmp_path):
    root = make_speech_tree(tmp_path / "w", ["yes", "no"], per_word=10, background=False)
    reference = setup("speech_commands", root, words=["yes", "no"])
    for name in ("validation_list.txt", "testing_list.txt"):
        text = (root / name).read_text()
        (root / name).write_text(text.replace("/", "\\").replace("\n", "\r\n"))
    dm = setup("speech_commands", root, words=["yes", "no"])
    assert dm.split_sizes() == reference.split_sizes() and dm.split_sizes()["test"] > 0
    np.testing.assert_array_equal(dm.test_set.targets, reference.test_set.targets)


def test_empty_split_is_an_error_before_any_feature_is_computed(tmp_path):
    root = make_speech_tree(tmp_path / "x", ["yes", "no"], per_word=10, background=False)
    (root / "testing_list.txt").write_text("elsewhere/a_nohash_0.wav\n")
    cache = tmp_path / "cache"
    with pytest.raises(EmptySplitError, match=r"test split is empty.*testing_list.txt"):
        data.get("speech_commands", root, words=["yes", "no"], cache_dir=cache, progress=False).setup()
    assert not cache.exists()
    assert issubclass(EmptySplitError, data.DataError)


def test_unreadable_background_file_is_skipped_and_named(tmp_path):
    root = make_speech_tree(tmp_path / "b", ["yes", "no"], per_word=10)
    broken = root / "_background_noise_" / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    with pytest.warns(UserWarning, match=r"(?s)skipped 1 unreadable _background_noise_ file.*broken.wav"):
        dm = setup("speech_commands", root, words=["yes", "no"], silence=True)
    assert count(dm.train_set, 0) == math.ceil(0.1 * 12) and not dm.bad_files
    for p in (root / "_background_noise_").glob("*_noise.wav"):
        p.write_bytes(b"not audio")
    with pytest.raises(LayoutError, match="no readable _background_noise_"), pytest.warns(UserWarning):
        setup("speech_commands", root, words=["yes", "no"], silence=True)


@pytest.mark.parametrize("name", ["google12", "google13"])
def test_how_to_obtain_names_the_requested_dataset(tmp_path, name):
    with pytest.raises(DatasetNotFoundError) as e:
        setup(name, tmp_path / "nowhere")
    msg = str(e.value)
    assert f"strrnn.data.get('{name}'" in msg and f"--dataset {name} --download" in msg and f"--words {name}" in msg


def test_read_only_root_is_never_written(testset, tmp_path, monkeypatch):
    root = make_testset_tree(tmp_path / "ro", speakers=12, per_speaker=1, silence=4)
    monkeypatch.setenv("STRRNN_CACHE", str(tmp_path / "user-cache"))
    for d in [root, *root.iterdir()]:
        d.chmod(0o555)
    try:
        dm = data.get("google12", root, progress=False)
        assert str(dm._resolved_cache_dir()).startswith(str(tmp_path / "user-cache"))
        dm.setup()
        assert not (root / ".cache").exists() and any((tmp_path / "user-cache").rglob("*.npy"))
    finally:
        for d in [root, *root.iterdir()]:
            d.chmod(0o755)


@needs_sample
def test_real_sample_is_a_testset_layout_split_by_speaker():
    dm = data.get("google12", SAMPLE)
    assert dm.layout == "testset"
    splits = dm._splits()
    by = speakers_by_split(dm, splits)
    assert not (by["train"] & by["val"]) and not (by["train"] & by["test"]) and not (by["val"] & by["test"])
    n = {s: len(items) for s, (items, _) in splits.items()}
    assert sum(n.values()) == 2748
    assert 0.75 < n["train"] / 2748 < 0.85 and 0.08 < n["val"] / 2748 < 0.13 and 0.08 < n["test"] / 2748 < 0.13
    assert len(by["train"]) + len(by["val"]) + len(by["test"]) - 203 == 130  # 130 speakers + 203 silence clips
    with pytest.raises(LayoutError, match="bed"):
        data.get("google13", SAMPLE)._splits()


# ---------------------------------------------------------------------------------------------------------
# Training-time augmentation (time shift, background noise)
# ---------------------------------------------------------------------------------------------------------
from strrnn.data.audio import Augmentation, augment_waveform  # noqa: E402
from strrnn.data.speech_datamodule import AugmentedAudioDataset  # noqa: E402


def test_augment_waveform_shifts_and_mixes_noise():
    y = np.zeros(1600, np.float32)
    y[800] = 0.5
    no_noise = Augmentation(shift_ms=10, noise_probability=0.0)
    shifts = set()
    for seed in range(40):
        out = augment_waveform(y, np.random.default_rng(seed), 16000, no_noise)
        assert out.shape == y.shape and out.dtype == np.float32 and np.count_nonzero(out) == 1
        shifts.add(int(np.flatnonzero(out)[0]) - 800)
    assert min(shifts) >= -160 and max(shifts) <= 160 and len(shifts) > 20  # up to 10 ms either way
    np.testing.assert_array_equal(augment_waveform(y, np.random.default_rng(3), 16000, no_noise),
                                  augment_waveform(y, np.random.default_rng(3), 16000, no_noise))
    noisy = Augmentation(shift_ms=0, noise_probability=1.0, noise_gain=0.5)
    noise = np.ones(700, np.float32)  # shorter than the clip: tiled
    out = augment_waveform(np.full(1600, 0.9, np.float32), np.random.default_rng(0), 16000, noisy, [noise])
    assert np.all(out > 0.9) and out.max() <= 1.0 and np.ptp(out) == 0  # one gain, clipped to [-1, 1]
    with pytest.raises(ValueError, match="probability"):
        Augmentation(noise_probability=2)


def test_augmented_training_set_reproduces_the_cached_features_when_off(testset):
    kw = dict(progress=False, cache_dir=testset.parent / "cache-aug")
    plain = data.get("google12", testset, **kw)
    plain.setup()
    off = data.get("google12", testset, augment={"shift_ms": 0, "noise_probability": 0}, **kw)
    off.setup()
    assert isinstance(off.train_set, AugmentedAudioDataset) and len(off.train_set) == len(plain.train_set)
    x, y = off.train_set.collate([off.train_set[i] for i in range(6)])
    np.testing.assert_allclose(x.numpy(), np.stack([plain.train_set[i][0].numpy() for i in range(6)]), atol=1e-4)
    assert y.tolist() == [plain.train_set[i][1] for i in range(6)]
    np.testing.assert_array_equal(off.train_set.targets, plain.train_set.targets)
    assert off.normalization == plain.normalization  # statistics of the clean training clips


def test_augmented_loader_batches_are_seeded_and_use_training_noise(testset):
    import torch

    dm = data.get("google12", testset, augment=True, batch_size=16, progress=False,
                  cache_dir=testset.parent / "cache-aug")
    dm.setup()
    silence_train = {it for it in dm._train_silence}
    assert 0 < len(dm.train_set.noises) == len(silence_train) < 12  # the training split's _silence_ clips only
    assert all(speaker_of(p) in {speaker_of(it.path) for it in dm._train_items[0]} for p in silence_train)

    def first_batch():
        torch.manual_seed(5)
        return next(iter(dm.train_dataloader()))

    (x1, y1), (x2, y2) = first_batch(), first_batch()
    assert x1.shape == (16, 99, 32) and x1.dtype == torch.float32 and y1.dtype == torch.int64
    torch.testing.assert_close(x1, x2)
    assert torch.equal(y1, y2)
    torch.manual_seed(6)
    x3, _ = next(iter(dm.train_dataloader()))
    assert not torch.allclose(x1, x3)  # fresh shifts and noise under another seed


def test_a_clip_in_both_split_lists_is_refused(tmp_path):
    root = make_speech_tree(tmp_path / "sc", ["yes", "no"], per_word=6)
    val = (root / "validation_list.txt").read_text().splitlines()
    with (root / "testing_list.txt").open("a") as handle:
        handle.write(val[0] + "\n")
    dm = data.get("speech_commands", root=root, words=["yes", "no"], cache_dir=tmp_path / "cache", progress=False)
    with pytest.raises(LayoutError, match=r"1 clip\(s\) are in both validation_list.txt and testing_list.txt"):
        dm.setup()
