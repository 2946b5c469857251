"""Fixture builders for the data tests (imported explicitly: ``from conftest_data import ...``).

Everything is generated on the fly with numpy + soundfile; no audio is committed.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 16000


def tone(
    freq: float, seconds: float = 0.5, sr: int = SR, amp: float = 0.3, seed: int = 0, noise: float = 0.01
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    y = amp * np.sin(2 * np.pi * freq * t) + noise * rng.standard_normal(t.size)
    return y.astype(np.float32)


def write_wav(path: Path, y: np.ndarray, sr: int = SR) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, y, sr, subtype="PCM_16")
    return path


def make_speech_tree(
    root: Path,
    words,
    per_word: int = 10,
    val_every: int = 5,
    test_every: int = 5,
    background: bool = True,
    seconds: float = 1.0,
) -> Path:
    """A tiny Speech Commands tree: ``per_word`` clips per word, speakers ``spk{i:04d}``.

    Clip ``i`` goes to validation when ``i % val_every == 1`` and to testing when
    ``i % test_every == 2`` (explicit lists, so every split is populated).
    """
    root.mkdir(parents=True, exist_ok=True)
    val, test = [], []
    for w in words:
        base = 200 + (zlib.crc32(w.encode()) % 3000)
        for i in range(per_word):
            rel = f"{w}/spk{i:04d}_nohash_0.wav"
            write_wav(root / rel, tone(base, seconds=seconds, seed=i))
            if i % val_every == 1:
                val.append(rel)
            elif i % test_every == 2:
                test.append(rel)
    (root / "validation_list.txt").write_text("".join(f"{p}\n" for p in val))
    (root / "testing_list.txt").write_text("".join(f"{p}\n" for p in test))
    if background:
        rng = np.random.default_rng(0)
        for name in ("white_noise", "pink_noise"):
            write_wav(
                root / "_background_noise_" / f"{name}.wav", (0.1 * rng.standard_normal(3 * SR)).astype(np.float32)
            )
    return root


def make_fsdd_tree(root: Path, speakers=("alice", "bob"), takes=range(0, 12), sr: int = 8000) -> Path:
    rec = root / "recordings"
    for d in range(10):
        for s in speakers:
            for t in takes:
                write_wav(rec / f"{d}_{s}_{t}.wav", tone(300 + 100 * d, seconds=0.4, sr=sr, seed=t), sr=sr)
    return root


def make_har_tree(root: Path, n_train: int = 24, n_test: int = 12, subjects_train=(1, 3, 5, 7), seed: int = 0):
    """The UCI HAR layout with random signals: ``root/UCI HAR Dataset/...``."""
    from strrnn.data.har import CHANNELS

    rng = np.random.default_rng(seed)
    base = root / "UCI HAR Dataset"
    for split, n, subjects in (("train", n_train, subjects_train), ("test", n_test, (2, 4))):
        sig = base / split / "Inertial Signals"
        sig.mkdir(parents=True, exist_ok=True)
        y = (np.arange(n) % 6) + 1
        subj = np.array([subjects[i % len(subjects)] for i in range(n)])
        for k, c in enumerate(CHANNELS):
            x = rng.standard_normal((n, 128)) * 0.1 + k
            np.savetxt(sig / f"{c}_{split}.txt", x, fmt="%.7e")
        np.savetxt(base / split / f"y_{split}.txt", y, fmt="%d")
        np.savetxt(base / split / f"subject_{split}.txt", subj, fmt="%d")
    (base / "activity_labels.txt").write_text(
        "1 WALKING\n2 WALKING_UPSTAIRS\n3 WALKING_DOWNSTAIRS\n4 SITTING\n5 STANDING\n6 LAYING\n"
    )
    return base
