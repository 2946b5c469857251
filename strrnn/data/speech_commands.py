"""Google Speech Commands (v0.01 / v0.02) from its real folder layouts, and its standard label sets.

Two layouts are read, and told apart by :func:`detect_layout`:

``archive`` (the official training archives): one folder per word holding ``<speaker>_nohash_<n>.wav`` clips
    (16 kHz, mono, 16-bit, 1 s or shorter), ``_background_noise_/`` (long noise recordings),
    ``validation_list.txt`` and ``testing_list.txt`` (relative paths, ``/`` or ``\\`` separators); every clip in
    neither list is training. The lists come from a hash of the speaker id (:func:`which_set`), so a speaker
    never spans two splits.
``testset`` (Google's canonical test set, ``speech_commands_test_set_v0.0x``): the ten google12 word folders,
    ``_silence_/<n>.wav`` (one-second background-noise clips) and ``_unknown_/<word>_<speaker>_nohash_<n>.wav``
    (a sample of the other words); no list files. Every one of its speakers is "testing" under
    :func:`which_set`, so a test-set folder used on its own is split by :func:`speaker_split` (speaker-disjoint,
    about 80/10/10 of the clips). With ``testset_split="test"`` every clip is a test clip instead: scoring a model
    trained on the full archive (``strrnn evaluate --run RUN --data-dir TESTSET``).

Label sets
----------
``google12``  ``_silence_``, ``_unknown_``, yes, no, up, down, left, right, on, off, stop, go (the order
    of TensorFlow's ``input_data.py``). Per split, with ``n`` clips of the ten words: ``ceil(10% n)``
    ``_unknown_`` clips are the first of the split's other-word clips after a seeded shuffle, and
    ``ceil(10% n)`` ``_silence_`` clips are 1-s crops of the background-noise files (file, offset
    and gain in [0, 1] drawn from a seeded generator; every split draws its own crops from the same
    files, as the reference pipeline mixes them into every split). For v0.01 this rule gives the
    published 22,246 training and 3,081 test examples.
    On the test-set layout, ``_silence_`` and ``_unknown_`` are that set's own ``_silence_/`` and ``_unknown_/``
    clips of each split (the canonical test set already holds them in this proportion).
``google13``  ``_unknown_`` (class 0: every clip of every other word), go, no, on, up, bed, cat, dog,
    off, one, six, two, yes -- EdgeML's ``LABELMAP13`` (ShaRNN line of work); background noise ignored.
    The test-set layout holds only 3-18 clips of bed, cat, dog, one, six and two (inside ``_unknown_/``), so
    training google13 there is refused; scoring a google13 model there (``testset_split="test"``) warns.
``google30`` / ``google35``  every word of v0.01 / v0.02, no extra classes.
``speech_commands(words=[...])``  any word list, optionally with ``unknown="all"|"sample"`` and ``silence``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import posixpath
import re
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf

from .audio import Item
from .base import user_cache_dir
from .errors import DatasetNotFoundError, LayoutError
from .paths import dataset_dir
from .speech_datamodule import AudioDataModule

log = logging.getLogger(__name__)

GOOGLE12_WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
GOOGLE13_WORDS = ("go", "no", "on", "up", "bed", "cat", "dog", "off", "one", "six", "two", "yes")
V001_WORDS = (
    "bed",
    "bird",
    "cat",
    "dog",
    "down",
    "eight",
    "five",
    "four",
    "go",
    "happy",
    "house",
    "left",
    "marvin",
    "nine",
    "no",
    "off",
    "on",
    "one",
    "right",
    "seven",
    "sheila",
    "six",
    "stop",
    "three",
    "tree",
    "two",
    "up",
    "wow",
    "yes",
    "zero",
)
V002_WORDS = tuple(sorted(V001_WORDS + ("backward", "follow", "forward", "learn", "visual")))
SILENCE, UNKNOWN, BACKGROUND = "_silence_", "_unknown_", "_background_noise_"
VERSIONS = ("v0.01", "v0.02")
LAYOUTS = ("archive", "testset")
LIST_FILES = ("validation_list.txt", "testing_list.txt")
#: ``testset_split`` values: split a test-set folder by speaker, or make every clip a test clip.
TESTSET_SPLITS = ("speaker", "test")
_TESTSET_UNKNOWN = re.compile(r"^([A-Za-z]+)_(.+)_nohash_\d+\.wav$")
_CLIP = re.compile(r"^(.+)_nohash_\d+\.wav$")

MAX_NUM_WAVS_PER_CLASS = 2**27 - 1  # ~134M, as in TensorFlow's speech_commands/input_data.py


def which_set(filename: str, validation_percentage: float = 10.0, testing_percentage: float = 10.0) -> str:
    """The Speech Commands split rule: a stable hash of the speaker id (the name before ``_nohash_``)."""
    base = Path(filename).name
    hash_name = re.sub(r"_nohash_.*$", "", base)
    hashed = hashlib.sha1(hash_name.encode()).hexdigest()
    pct = (int(hashed, 16) % (MAX_NUM_WAVS_PER_CLASS + 1)) * (100.0 / MAX_NUM_WAVS_PER_CLASS)
    if pct < validation_percentage:
        return "validation"
    if pct < validation_percentage + testing_percentage:
        return "testing"
    return "training"


def how_to_obtain(root: Path, version: str, name: str = "google12") -> str:
    """How to get the data at ``root`` for dataset ``name`` (named in the commands it suggests)."""
    preset = name if name in ("google12", "google13") else "google12"
    return (
        f"Get it with download=True (e.g. strrnn.data.get('{name}', root='{root}', download=True), or "
        f"`python -m strrnn.train --dataset {name} --download`), which fetches the official "
        f"speech_commands_{version}.tar.gz; or generate the offline stand-in in the same layout with "
        f"`strrnn synthesize --words {preset} --out {root} --per-word 50`."
    )


def speaker_of(path: str | os.PathLike) -> str:
    """The speaker id of a clip: the name before ``_nohash_``, after the word prefix in ``_unknown_/``.

    A ``_silence_/`` clip has no speaker: its own ``_silence_/<name>`` stands for one. Raises ``ValueError`` for
    a name that fits neither pattern.
    """
    p = Path(path)
    if p.parent.name == SILENCE:
        return f"{SILENCE}/{p.name}"
    m = (_TESTSET_UNKNOWN if p.parent.name == UNKNOWN else _CLIP).match(p.name)
    if not m:
        raise ValueError(f"{p}: not a Speech Commands clip name (<speaker>_nohash_<n>.wav)")
    return m.group(m.lastindex)


def speaker_split(speakers: dict[str, int], val_fraction: float = 0.1, test_fraction: float = 0.1) -> dict[str, str]:
    """A speaker-disjoint split of a test-set folder: ``{speaker: "train" | "val" | "test"}``.

    ``speakers`` maps each speaker id to its number of clips. Speakers are ordered by the SHA-1 of
    ``"strrnn-speaker-split/<id>"`` (deterministic, unrelated to :func:`which_set`, under which every speaker of
    the canonical test set is "testing"); ``test`` takes speakers from the start of that order while it holds
    fewer than ``test_fraction`` of the clips, then ``val`` likewise, and the rest is ``train``. Each split thus
    holds about its fraction of the clips (one speaker's clips over), and no speaker is in two splits.
    """
    if not (0 <= val_fraction and 0 <= test_fraction and val_fraction + test_fraction < 1):
        raise ValueError(f"need 0 <= fractions and val + test < 1, got {val_fraction}, {test_fraction}")
    order = sorted(speakers, key=lambda s: (hashlib.sha1(f"strrnn-speaker-split/{s}".encode()).hexdigest(), s))
    total = sum(speakers.values())
    out, taken, k = {}, 0, 0
    for split, fraction in (("test", test_fraction), ("val", val_fraction)):
        goal, taken = fraction * total, 0
        while k < len(order) and taken < goal:
            out[order[k]] = split
            taken += speakers[order[k]]
            k += 1
    out.update({s: "train" for s in order[k:]})
    return out


def detect_layout(root: str | os.PathLike) -> str:
    """``"archive"`` (list files present, or no test-set folders) or ``"testset"`` (``_silence_/`` or
    ``_unknown_/`` and no list files). Raises :class:`DatasetNotFoundError` when ``root`` does not exist."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetNotFoundError(f"Speech Commands dataset not found: {root} does not exist")
    if any((root / n).is_file() for n in LIST_FILES):
        return "archive"
    return "testset" if (root / SILENCE).is_dir() or (root / UNKNOWN).is_dir() else "archive"


def _list_entry(root: Path, line: str) -> str:
    """A list-file line as the path :func:`scan` globs: ``\\`` separators and ``./`` prefixes normalised."""
    rel = posixpath.normpath(line.strip().replace("\\", "/"))
    return str(root / rel)


def scan(root: Path, words, need_background: bool, version: str, name: str = "google12"):
    """Check the archive layout and return ``(word -> sorted clip paths, background files, list sets)``."""
    if not root.is_dir():
        raise DatasetNotFoundError(
            f"Speech Commands dataset not found: {root} does not exist. " + how_to_obtain(root, version, name)
        )
    missing = [n for n in LIST_FILES if not (root / n).is_file()]
    present = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
    missing += [f"{w}/" for w in words if w not in present]
    bg = sorted((root / BACKGROUND).glob("*.wav")) if (root / BACKGROUND).is_dir() else []
    if need_background and not bg:
        missing.append(f"{BACKGROUND}/*.wav (needed for the {SILENCE} class)")
    if missing:
        raise LayoutError(
            f"Speech Commands layout under {root} is incomplete; missing: {', '.join(missing)}. "
            + how_to_obtain(root, version, name)
        )
    clips = {w: sorted(str(p) for p in (root / w).glob("*.wav")) for w in present}
    lists = {}
    for split, fname in (("val", "validation_list.txt"), ("test", "testing_list.txt")):
        lines = (root / fname).read_text().splitlines()
        lists[split] = {_list_entry(root, ln) for ln in lines if ln.strip()}
    both = sorted(lists["val"] & lists["test"])
    if both:
        # a clip in both lists would be validated and tested on: the test accuracy would not be held out
        raise LayoutError(
            f"{len(both)} clip(s) are in both validation_list.txt and testing_list.txt under {root} (e.g. "
            f"{os.path.relpath(both[0], root)}); fix the lists so that every clip is in at most one"
        )
    return clips, bg, lists


def scan_testset(root: Path, words) -> tuple[dict[str, list[str]], list[str], list[str]]:
    """Check the test-set layout; return ``(word -> sorted clip paths, silence clips, unreadable names)``.

    Words come from the word folders and from the ``<word>_`` prefixes inside ``_unknown_/``; clip names that fit
    no pattern are returned in the third list (skipped, and reported by the caller).
    """
    clips: dict[str, list[str]] = {}
    odd: list[str] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if folder.name == SILENCE or (folder.name.startswith("_") and folder.name != UNKNOWN):
            continue
        for p in sorted(folder.glob("*.wav")):
            if folder.name == UNKNOWN:
                m = _TESTSET_UNKNOWN.match(p.name)
                if not m:
                    odd.append(str(p))
                    continue
                clips.setdefault(m.group(1), []).append(str(p))
            elif _CLIP.match(p.name):
                clips.setdefault(folder.name, []).append(str(p))
            else:
                odd.append(str(p))
    silence = sorted(str(p) for p in (root / SILENCE).glob("*.wav")) if (root / SILENCE).is_dir() else []
    missing = [f"{w}/" for w in words if w not in clips]
    if missing:
        raise LayoutError(
            f"Speech Commands test-set layout under {root} has no clips of {', '.join(missing)} "
            f"(neither a folder nor {UNKNOWN}/<word>_<speaker>_nohash_<n>.wav); pick words it holds: "
            f"{', '.join(sorted(clips))}"
        )
    return {w: sorted(v) for w, v in clips.items()}, silence, odd


class SpeechCommandsDataModule(AudioDataModule):
    """Speech Commands as a LightningDataModule; see the module docstring for the layouts and label sets.

    Parameters beyond :class:`BaseDataModule`/:class:`AudioDataModule`: ``words`` (the keyword
    classes), ``unknown`` (``None``, ``"all"``: every other word, or ``"sample"``: ``unknown_percentage``
    of the keyword count per split), ``silence`` (add ``_silence_`` crops), ``unknown_first`` (class
    order), ``version``, ``download``, ``testset_split`` (test-set layout only: ``"speaker"`` splits it by
    :func:`speaker_split`, ``"test"`` makes every clip a test clip -- then pass the training run's
    ``normalization``). Features are cached under ``root/.cache``, or under the user cache
    (``$STRRNN_CACHE``, ``~/.cache/strrnn/speech_commands/``) when ``root`` is read-only.
    """

    def __init__(
        self,
        root=None,
        words=GOOGLE12_WORDS,
        unknown: str | None = None,
        silence: bool = False,
        unknown_percentage: float = 10.0,
        silence_percentage: float = 10.0,
        version: str = "v0.01",
        download: bool = False,
        name: str = "speech_commands",
        class_order: list[str] | None = None,
        testset_split: str = "speaker",
        **kwargs,
    ):
        if version not in VERSIONS:
            raise ValueError(f"version must be one of {VERSIONS}, got {version!r}")
        if testset_split not in TESTSET_SPLITS:
            raise ValueError(f"testset_split must be one of {TESTSET_SPLITS}, got {testset_split!r}")
        root = dataset_dir(f"speech_commands_{version}", root)
        super().__init__(root=root, **kwargs)
        words = list(words)
        if not words or len(set(words)) != len(words):
            raise ValueError(f"words must be a non-empty list without duplicates, got {words}")
        if unknown not in (None, "all", "sample"):
            raise ValueError(f"unknown must be None, 'all' or 'sample', got {unknown!r}")
        self.name, self.words, self.unknown, self.silence = name, words, unknown, silence
        self.unknown_percentage, self.silence_percentage = unknown_percentage, silence_percentage
        self.version, self.download = version, download
        self.testset_split = testset_split
        self._train_silence: list[str] = []
        self.split_summary: dict[str, dict[str, int]] = {}
        names = ([SILENCE] if silence else []) + ([UNKNOWN] if unknown else []) + words
        self.class_names = list(class_order) if class_order else names
        if sorted(self.class_names) != sorted(names):
            raise ValueError(f"class_order {class_order} must be a permutation of {names}")

    @property
    def layout(self) -> str:
        """``"archive"`` or ``"testset"`` (see :func:`detect_layout`) of the folder at ``root``."""
        return detect_layout(self.root)

    @property
    def required_splits(self) -> tuple[str, ...]:
        """Splits that must not be empty: only ``test`` when a test-set folder is scored as a whole."""
        if self.testset_split == "test" and self.root.is_dir() and self.layout == "testset":
            return ("test",)
        return ("train", "val", "test")

    def _default_cache_dir(self) -> Path:
        # never write into a read-only dataset (e.g. shared reference data): use the user cache, one folder per root
        if os.access(self.root, os.W_OK) and self.root.stat().st_mode & 0o222:
            return self.root / ".cache"
        digest = hashlib.sha1(str(self.root.resolve()).encode()).hexdigest()[:12]
        return user_cache_dir() / "speech_commands" / f"{self.root.name}-{digest}"

    def prepare_data(self) -> None:
        if not self.download or (self.root / "testing_list.txt").is_file():
            return
        if self.root.is_dir() and self.layout == "testset":
            return  # a test-set folder is complete as it is; never unpack an archive into it
        from .downloader import download

        download(f"speech_commands_{self.version}", self.root)

    def _noise_items(self) -> list[Item]:
        if self.layout == "testset":
            return [Item(p) for p in self._train_silence]
        bg = sorted((self.root / BACKGROUND).glob("*.wav")) if (self.root / BACKGROUND).is_dir() else []
        return [Item(str(p)) for p in bg]

    def _empty_split_hint(self, split: str) -> str:
        if self.root.is_dir() and self.layout == "testset":
            return "the test-set folder has too few speakers for a speaker-disjoint split"
        listed = {"val": "validation_list.txt", "test": "testing_list.txt"}.get(split)
        if listed:
            return (f"{listed} must name clips of the requested words relative to {self.root} "
                    f"(e.g. {self.words[0]}/<speaker>_nohash_0.wav)")
        return "every clip is named in validation_list.txt or testing_list.txt"

    def _splits(self):
        self.prepare_data()
        if not self.root.is_dir():
            raise DatasetNotFoundError(
                f"Speech Commands dataset not found: {self.root} does not exist. "
                + how_to_obtain(self.root, self.version, self.name)
            )
        if self.layout == "testset":
            per_split, others, silence_clips = self._testset_parts()
            bg_frames = None
        else:
            per_split, others, bg_frames = self._archive_parts()
            silence_clips = None
        label = {n: i for i, n in enumerate(self.class_names)}
        out = {}
        for k, split in enumerate(("train", "val", "test")):
            items, labels, unk = per_split[split]
            items, labels = list(items), list(labels)
            n_known = len(items)
            if self.unknown == "all" or (self.unknown == "sample" and silence_clips is not None):
                items += unk  # the test set's own _unknown_ clips are already its sample
                labels += [label[UNKNOWN]] * len(unk)
            elif self.unknown == "sample":
                rng = np.random.default_rng([self.seed, k, 1])
                n = min(math.ceil(n_known * self.unknown_percentage / 100), len(unk))
                pick = rng.permutation(len(unk))[:n]
                items += [unk[i] for i in sorted(pick)]
                labels += [label[UNKNOWN]] * n
            if self.silence and silence_clips is not None:
                items += [Item(p) for p in silence_clips[split]]
                labels += [label[SILENCE]] * len(silence_clips[split])
            elif self.silence:
                rng = np.random.default_rng([self.seed, k, 2])
                n = math.ceil(n_known * self.silence_percentage / 100)
                items += [_noise_crop(bg_frames, rng, self.features.num_samples) for _ in range(n)]
                labels += [label[SILENCE]] * n
            out[split] = (items, labels)
        return out

    def _archive_parts(self):
        """Per split ``(known items, labels, other-word items)``, other words, background ``(path, frames)``."""
        clips, bg, lists = scan(self.root, self.words, self.silence, self.version, self.name)
        known = set(self.words)
        others = [w for w in clips if w not in known]
        if self.unknown and not others:
            raise LayoutError(f"{self.root}: the {UNKNOWN} class needs word folders besides {self.words}")
        label = {n: i for i, n in enumerate(self.class_names)}
        per_split = {s: ([], [], []) for s in ("train", "val", "test")}
        listed = set()
        for w, paths in clips.items():
            if w not in known and not self.unknown:
                continue
            for p in paths:
                split = "val" if p in lists["val"] else "test" if p in lists["test"] else "train"
                listed.add(p)
                if w in known:
                    per_split[split][0].append(Item(p))
                    per_split[split][1].append(label[w])
                else:
                    per_split[split][2].append(Item(p))
        dangling = [
            p
            for s in ("val", "test")
            for p in lists[s]
            if p not in listed and Path(p).parent.name in set(self.words) | (set(others) if self.unknown else set())
        ]
        if dangling:
            warnings.warn(
                f"{self.name}: {len(dangling)} entries of the list files name missing clips (e.g. {dangling[0]})",
                stacklevel=3,
            )
        bg_frames = _readable_background(bg, self.features.sample_rate, self.name) if self.silence else []
        if self.silence and not bg_frames:
            raise LayoutError(
                f"{self.name}: no readable {BACKGROUND}/*.wav under {self.root} (needed for the {SILENCE} class); "
                "replace the unreadable files named above"
            )
        return per_split, others, bg_frames

    def _testset_parts(self):
        """The test-set layout: per split ``(known items, labels, other-word items)``, other words, silence."""
        if self.testset_split == "test" and self.normalize and self.normalization is None:
            raise ValueError(
                f"{self.name}: testset_split='test' puts every clip of {self.root} in the test split, so there is no "
                "training split to compute feature statistics from: pass the training run's normalization=..."
            )
        clips, silence, odd = scan_testset(self.root, self.words)
        if odd:
            shown = "\n  ".join(odd[:10]) + ("\n  ..." if len(odd) > 10 else "")
            warnings.warn(f"{self.name}: skipped {len(odd)} file(s) not named like Speech Commands clips:\n  {shown}",
                          stacklevel=3)
        known = set(self.words)
        others = [w for w in clips if w not in known]
        if self.unknown and not others:
            raise LayoutError(f"{self.root}: the {UNKNOWN} class needs clips of words besides {self.words}")
        if self.silence and not silence:
            raise LayoutError(f"Speech Commands test-set layout under {self.root} has no {SILENCE}/*.wav "
                              f"(needed for the {SILENCE} class)")
        sampled = sorted(w for w in self.words if not (self.root / w).is_dir())  # only inside _unknown_/
        if sampled:
            counts = ", ".join(f"{w} ({len(clips[w])})" for w in sampled)
            what = (f"{self.name} on the Speech Commands test-set layout at {self.root}: its words {counts} have only "
                    f"the few clips of the test set's {UNKNOWN}/ sample")
            if self.testset_split != "test":
                raise LayoutError(
                    f"{what}, too few to train on. Use google12 on this folder, or train {self.name} on the full "
                    f"archive (download=True) and score it here with `strrnn evaluate --run RUN "
                    f"--data-dir {self.root}`"
                )
            warnings.warn(f"{what}: their accuracies rest on those few clips", stacklevel=3)
        label = {n: i for i, n in enumerate(self.class_names)}
        everything = [(w, p) for w, paths in clips.items() for p in paths if w in known or self.unknown]
        use_silence = silence if self.silence else []
        if self.testset_split == "test":
            assign = dict.fromkeys([speaker_of(p) for _, p in everything] + [speaker_of(p) for p in use_silence],
                                   "test")
        else:
            counts: dict[str, int] = {}
            for p in [p for _, p in everything] + use_silence:
                counts[speaker_of(p)] = counts.get(speaker_of(p), 0) + 1
            assign = speaker_split(counts)
        per_split = {s: ([], [], []) for s in ("train", "val", "test")}
        silence_by_split: dict[str, list[str]] = {s: [] for s in ("train", "val", "test")}
        for w, p in everything:
            split = assign[speaker_of(p)]
            if w in known:
                per_split[split][0].append(Item(p))
                per_split[split][1].append(label[w])
            else:
                per_split[split][2].append(Item(p))
        for p in use_silence:
            silence_by_split[assign[speaker_of(p)]].append(p)
        self._train_silence = [p for p in silence if assign.get(speaker_of(p), "train") == "train"]
        self.split_summary = {}
        for split in ("train", "val", "test"):
            speakers = {speaker_of(it.path) for it in per_split[split][0] + per_split[split][2]}
            n = len(per_split[split][0]) + len(per_split[split][2]) + len(silence_by_split[split])
            self.split_summary[split] = {"clips": n, "speakers": len(speakers)}
        sizes = ", ".join(f"{k} {v['clips']} clips / {v['speakers']} speakers" for k, v in self.split_summary.items())
        rule = "every clip as test" if self.testset_split == "test" else "split by speaker"
        log.info("%s: Speech Commands test-set layout at %s, %s: %s", self.name, self.root, rule, sizes)
        return per_split, others, silence_by_split


def _readable_background(paths, sample_rate: int, name: str) -> list[tuple[str, int]]:
    """``(path, frames at sample_rate)`` of the readable background files; one warning names the others."""
    frames, bad = [], []
    for p in paths:
        try:
            n = _frames_at(p, sample_rate)
            if n <= 0:
                raise ValueError("no audio frames")
            frames.append((str(p), n))
        except Exception as exc:  # noqa: BLE001 - any libsndfile failure marks the file unreadable
            bad.append(f"{p}: {type(exc).__name__}: {exc}")
    if bad:
        shown = "\n  ".join(bad[:10]) + ("\n  ..." if len(bad) > 10 else "")
        warnings.warn(f"{name}: skipped {len(bad)} unreadable {BACKGROUND} file(s):\n  {shown}", stacklevel=4)
    return frames


def _frames_at(path: Path, sample_rate: int) -> int:
    info = sf.info(str(path))
    return int(info.frames * sample_rate // info.samplerate)


def _noise_crop(bg_frames, rng: np.random.Generator, length: int) -> Item:
    path, frames = bg_frames[int(rng.integers(len(bg_frames)))]
    offset = int(rng.integers(0, max(frames - length, 0) + 1))
    return Item(path, offset=offset, length=length, gain=round(float(rng.uniform(0.0, 1.0)), 6))


def google12(root=None, **kw) -> SpeechCommandsDataModule:
    return SpeechCommandsDataModule(root, words=GOOGLE12_WORDS, unknown="sample", silence=True, name="google12", **kw)


def google13(root=None, **kw) -> SpeechCommandsDataModule:
    return SpeechCommandsDataModule(root, words=GOOGLE13_WORDS, unknown="all", silence=False, name="google13", **kw)


def google30(root=None, **kw) -> SpeechCommandsDataModule:
    return SpeechCommandsDataModule(root, words=V001_WORDS, name="google30", **kw)


def google35(root=None, version: str = "v0.02", **kw) -> SpeechCommandsDataModule:
    return SpeechCommandsDataModule(root, words=V002_WORDS, name="google35", version=version, **kw)


def speech_commands(root=None, words=None, **kw) -> SpeechCommandsDataModule:
    if not words:
        raise ValueError("speech_commands needs words=[...] (or use google12 / google13 / google30 / google35)")
    return SpeechCommandsDataModule(root, words=words, **kw)
