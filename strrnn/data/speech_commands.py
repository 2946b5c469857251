"""Google Speech Commands (v0.01 / v0.02) from its real folder layout, and its standard label sets.

Layout (as in the official archives): one folder per word holding ``<speaker>_nohash_<n>.wav`` clips
(16 kHz, mono, 16-bit, 1 s or shorter), ``_background_noise_/`` (long noise recordings),
``validation_list.txt`` and ``testing_list.txt`` (relative paths); every clip in neither list is
training. The lists come from a hash of the speaker id (:func:`which_set`), so a speaker never
spans two splits.

Label sets
----------
``google12``  ``_silence_``, ``_unknown_``, yes, no, up, down, left, right, on, off, stop, go (the order
    of TensorFlow's ``input_data.py``). Per split, with ``n`` clips of the ten words: ``ceil(10% n)``
    ``_unknown_`` clips are the first of the split's other-word clips after a seeded shuffle, and
    ``ceil(10% n)`` ``_silence_`` clips are 1-s crops of the background-noise files (file, offset
    and gain in [0, 1] drawn from a seeded generator; every split draws its own crops from the same
    files, as the reference pipeline mixes them into every split). For v0.01 this rule gives the
    published 22,246 training and 3,081 test examples.
``google13``  ``_unknown_`` (class 0: every clip of every other word), go, no, on, up, bed, cat, dog,
    off, one, six, two, yes -- EdgeML's ``LABELMAP13`` (ShaRNN line of work); background noise ignored.
``google30`` / ``google35``  every word of v0.01 / v0.02, no extra classes.
``speech_commands(words=[...])``  any word list, optionally with ``unknown="all"|"sample"`` and ``silence``.
"""

from __future__ import annotations

import hashlib
import math
import re
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf

from .audio import Item
from .audio_module import AudioDataModule
from .base import default_data_dir
from .errors import DatasetNotFoundError, LayoutError

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


def how_to_obtain(root: Path, version: str) -> str:
    return (
        f"Get it with download=True (e.g. strrnn.data.get('google12', root='{root}', download=True), or "
        f"`python -m strrnn.train --dataset google12 --download`), which fetches the official "
        f"speech_commands_{version}.tar.gz; or generate the offline stand-in in the same layout with "
        f"`python -m strrnn.data.synthesize --words google13 --out {root} --per-word 50`."
    )


def scan(root: Path, words, need_background: bool, version: str):
    """Check the layout and return ``(word -> sorted clip paths, background files, list sets)``."""
    if not root.is_dir():
        raise DatasetNotFoundError(
            f"Speech Commands dataset not found: {root} does not exist. " + how_to_obtain(root, version)
        )
    missing = [n for n in ("validation_list.txt", "testing_list.txt") if not (root / n).is_file()]
    present = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
    missing += [f"{w}/" for w in words if w not in present]
    bg = sorted((root / BACKGROUND).glob("*.wav")) if (root / BACKGROUND).is_dir() else []
    if need_background and not bg:
        missing.append(f"{BACKGROUND}/*.wav (needed for the {SILENCE} class)")
    if missing:
        raise LayoutError(
            f"Speech Commands layout under {root} is incomplete; missing: {', '.join(missing)}. "
            + how_to_obtain(root, version)
        )
    clips = {w: sorted(str(p) for p in (root / w).glob("*.wav")) for w in present}
    lists = {}
    for split, fname in (("val", "validation_list.txt"), ("test", "testing_list.txt")):
        lines = (root / fname).read_text().split()
        lists[split] = {str(root / ln.strip()) for ln in lines if ln.strip()}
    return clips, bg, lists


class SpeechCommandsDataModule(AudioDataModule):
    """Speech Commands as a LightningDataModule; see the module docstring for the label sets.

    Parameters beyond :class:`BaseDataModule`/:class:`AudioDataModule`: ``words`` (the keyword
    classes), ``unknown`` (``None``, ``"all"``: every other word, or ``"sample"``: ``unknown_percentage``
    of the keyword count per split), ``silence`` (add ``_silence_`` crops), ``unknown_first`` (class
    order), ``version``, ``download``.
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
        **kwargs,
    ):
        if version not in VERSIONS:
            raise ValueError(f"version must be one of {VERSIONS}, got {version!r}")
        root = Path(root) if root is not None else default_data_dir() / f"speech_commands_{version}"
        super().__init__(root=root, **kwargs)
        words = list(words)
        if not words or len(set(words)) != len(words):
            raise ValueError(f"words must be a non-empty list without duplicates, got {words}")
        if unknown not in (None, "all", "sample"):
            raise ValueError(f"unknown must be None, 'all' or 'sample', got {unknown!r}")
        self.name, self.words, self.unknown, self.silence = name, words, unknown, silence
        self.unknown_percentage, self.silence_percentage = unknown_percentage, silence_percentage
        self.version, self.download = version, download
        names = ([SILENCE] if silence else []) + ([UNKNOWN] if unknown else []) + words
        self.class_names = list(class_order) if class_order else names
        if sorted(self.class_names) != sorted(names):
            raise ValueError(f"class_order {class_order} must be a permutation of {names}")

    def prepare_data(self) -> None:
        if self.download and not (self.root / "testing_list.txt").is_file():
            from .download import download

            download(f"speech_commands_{self.version}", self.root)

    def _splits(self):
        self.prepare_data()
        clips, bg, lists = scan(self.root, self.words, self.silence, self.version)
        known = set(self.words)
        others = [w for w in clips if w not in known]
        if self.unknown and not others:
            raise LayoutError(f"{self.root}: the {UNKNOWN} class needs word folders besides {self.words}")
        label = {n: i for i, n in enumerate(self.class_names)}
        per_split = {s: ([], [], []) for s in ("train", "val", "test")}  # known items, labels, unknown items
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
                stacklevel=2,
            )
        bg_frames = [(str(p), _frames_at(p, self.features.sample_rate)) for p in bg]
        out = {}
        for k, split in enumerate(("train", "val", "test")):
            items, labels, unk = per_split[split]
            items, labels = list(items), list(labels)
            n_known = len(items)
            if self.unknown == "all":
                items += unk
                labels += [label[UNKNOWN]] * len(unk)
            elif self.unknown == "sample":
                rng = np.random.default_rng([self.seed, k, 1])
                n = min(math.ceil(n_known * self.unknown_percentage / 100), len(unk))
                pick = rng.permutation(len(unk))[:n]
                items += [unk[i] for i in sorted(pick)]
                labels += [label[UNKNOWN]] * n
            if self.silence:
                rng = np.random.default_rng([self.seed, k, 2])
                n = math.ceil(n_known * self.silence_percentage / 100)
                items += [_noise_crop(bg_frames, rng, self.features.num_samples) for _ in range(n)]
                labels += [label[SILENCE]] * n
            out[split] = (items, labels)
        return out


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
