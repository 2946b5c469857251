"""Synthetic speech in the exact Speech Commands v0.01 layout, spoken by espeak-ng.

``synthesize(words, out, per_word)`` writes ``out/<word>/<speaker>_nohash_<n>.wav`` (16 kHz, 1 s,
16-bit mono PCM), ``out/_background_noise_/*.wav`` (generated white, pink, brown noise and mains
hum), ``validation_list.txt`` / ``testing_list.txt`` (split by speaker with Speech Commands' own
hash rule, :func:`strrnn.data.speech_commands.which_set`), ``metadata.csv`` (every clip's voice,
speed, pitch, gain, noise and SNR) and ``README.md``.

A "speaker" is an espeak-ng English dialect x voice variant x base pitch (thousands of combinations);
each clip draws its speaker, speaking rate, gain, background-noise type and SNR from a generator
seeded by ``(seed, word, index)``, so the output does not depend on scheduling. Words are trimmed,
resampled from espeak's 22.05 kHz with soxr, and placed around the clip centre (+-0.2 s), as most
Speech Commands utterances are. Clips are rendered in parallel (one espeak-ng process per clip).

Command line: ``strrnn synthesize --words google13 --out DIR --per-word N [--seed S]``.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import subprocess
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf

from .audio import resample
from .errors import MissingToolError
from .speech_commands import BACKGROUND, GOOGLE12_WORDS, GOOGLE13_WORDS, V001_WORDS, V002_WORDS, which_set

SAMPLE_RATE = 16000
DIALECTS = (
    "en",
    "en-us",
    "en-gb-scotland",
    "en-gb-x-rp",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-029",
    "en-us-nyc",
)
VARIANTS = (
    "m1",
    "m2",
    "m3",
    "m4",
    "m5",
    "m6",
    "m7",
    "m8",
    "f1",
    "f2",
    "f3",
    "f4",
    "f5",
    "klatt",
    "klatt2",
    "klatt3",
    "klatt4",
    "Alex",
    "Andy",
    "Annie",
    "Denis",
    "Gene",
    "Lee",
    "Mike",
    "adam",
    "anika",
    "belinda",
    "benjamin",
    "caleb",
    "david",
    "ed",
    "edward",
    "grandma",
    "grandpa",
    "iven",
    "john",
    "linda",
    "max",
    "michel",
    "norbert",
    "paul",
    "quincy",
    "rob",
    "robert",
    "shelby",
    "steph",
    "travis",
    "victor",
    "zac",
)
PITCHES = tuple(range(25, 80, 5))
#: Non-keyword words spoken for the negative (``_unknown_``) class of the google12/13 presets.
NEGATIVE_WORDS = ("bird", "house", "tree", "wow", "happy", "marvin", "sheila", "zero")
WORD_SETS = {
    "google12": GOOGLE12_WORDS,
    "google13": GOOGLE13_WORDS,
    "google30": V001_WORDS,
    "google35": V002_WORDS,
}
NOISES = ("white_noise", "pink_noise", "brown_noise", "hum")
INSTALL_HINT = (
    "espeak-ng is not installed (or not on PATH). Install it with `sudo apt-get install espeak-ng` "
    "(Debian/Ubuntu), `sudo dnf install espeak-ng` (Fedora), or `brew install espeak-ng` (macOS); or "
    "set $STRRNN_ESPEAK to the espeak-ng executable."
)


def espeak_path() -> str:
    exe = os.environ.get("STRRNN_ESPEAK") or shutil.which("espeak-ng")
    if not exe or not (os.path.isfile(exe) and os.access(exe, os.X_OK)):
        raise MissingToolError(INSTALL_HINT)
    return exe


@lru_cache(maxsize=4)
def available_variants(exe: str) -> tuple[str, ...]:
    try:
        text = subprocess.run([exe, "--voices=variant"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ("m1", "f1")
    names = {line.split()[3] for line in text.splitlines()[1:] if len(line.split()) > 3}
    files = {line.split()[4].split("/")[-1] for line in text.splitlines()[1:] if len(line.split()) > 4}
    found = tuple(v for v in VARIANTS if v in names or v in files)
    return found or ("m1",)


#: A word becomes the folder ``out/<word>``: it must start with a letter or digit and hold only letters,
#: digits, spaces, hyphens and apostrophes (so no ``/``, ``\``, ``..``, leading ``.``/``_``/``-``).
_WORD_RE = re.compile(r"[^\W_][\w' -]*")


def check_word(word: str) -> str:
    """Return ``word`` if it is usable as a plain folder name under ``out``; raise ``ValueError`` otherwise.

    Each word is written to ``out/<word>/``, so a word such as ``../x``, ``a/b``, ``.hidden`` or
    ``_background_noise_`` would write outside ``out`` or into a reserved folder.
    """
    if not isinstance(word, str) or not _WORD_RE.fullmatch(word) or word.endswith(" "):
        raise ValueError(
            f"invalid word {word!r}: each word becomes a folder under --out, so use letters, digits, "
            "spaces, hyphens or apostrophes, starting with a letter or digit (no '/', '\\', '..')"
        )
    return word


def resolve_words(words, negatives: bool = True) -> tuple[list[str], list[str]]:
    """``(keywords, negative words)`` from a preset name, a comma-separated string or a list.

    Every word is checked with :func:`check_word` (``ValueError`` names the first bad one).
    """
    if isinstance(words, str) and words in WORD_SETS:
        kws = list(WORD_SETS[words])
        negs = [w for w in NEGATIVE_WORDS if w not in kws] if negatives and words in ("google12", "google13") else []
        return kws, negs
    if isinstance(words, str):
        words = [w.strip() for w in words.split(",") if w.strip()]
    words = [check_word(w) for w in dict.fromkeys(words)]
    if not words:
        raise ValueError("no words to synthesize")
    return words, []


def make_noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "white_noise":
        y = rng.standard_normal(n)
    elif kind in ("pink_noise", "brown_noise"):
        spec = np.fft.rfft(rng.standard_normal(n))
        f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
        f[0] = f[1]
        spec /= np.sqrt(f) if kind == "pink_noise" else f
        spec[f < 20] = 0
        y = np.fft.irfft(spec, n)
    elif kind == "hum":
        t = np.arange(n) / SAMPLE_RATE
        y = sum(np.sin(2 * np.pi * 50 * k * t + rng.uniform(0, 2 * np.pi)) / k for k in (1, 2, 3, 5))
        y = y + 0.3 * rng.standard_normal(n)
    else:
        raise ValueError(kind)
    return (0.1 * y / (np.sqrt(np.mean(y**2)) + 1e-12)).astype(np.float32)


def speak(exe: str, text: str, voice: str, speed: int, pitch: int) -> np.ndarray:
    """espeak-ng -> float32 mono at 16 kHz, leading/trailing silence trimmed."""
    proc = subprocess.run(
        [exe, "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", text],
        capture_output=True,
        timeout=60,
    )
    if proc.returncode != 0 or len(proc.stdout) < 100:
        raise RuntimeError(f"espeak-ng failed for {text!r} ({voice}): {proc.stderr.decode(errors='replace')}")
    y, sr = sf.read(io.BytesIO(proc.stdout), dtype="float32")
    y = y.mean(axis=1) if y.ndim > 1 else y
    loud = np.flatnonzero(np.abs(y) > 0.02 * (np.abs(y).max() + 1e-9))
    if loud.size:
        y = y[max(loud[0] - 80, 0) : loud[-1] + 80]
    return resample(np.ascontiguousarray(y, dtype=np.float32), sr, SAMPLE_RATE)


def render_clip(exe: str, word: str, index: int, seed: int, variants, noise_bank) -> dict:
    rng = np.random.default_rng([seed, zlib.crc32(word.encode()), index])
    dialect = DIALECTS[rng.integers(len(DIALECTS))]
    variant = variants[rng.integers(len(variants))]
    pitch = int(PITCHES[rng.integers(len(PITCHES))])
    speaker = zlib.crc32(f"{dialect}+{variant}+{pitch}".encode()).to_bytes(4, "big").hex()
    speed = int(rng.integers(120, 201))
    gain_db = float(rng.uniform(-18.0, 0.0))
    noise = NOISES[rng.integers(len(NOISES))]
    snr_db = float(rng.uniform(5.0, 30.0))
    shift = float(rng.uniform(-0.2, 0.2))
    y = speak(exe, word, f"{dialect}+{variant}", speed, pitch)
    if y.size > SAMPLE_RATE:  # rare (slow rate, long word): keep the middle second
        a = (y.size - SAMPLE_RATE) // 2
        y = y[a : a + SAMPLE_RATE]
    y = y / (np.abs(y).max() + 1e-9) * 0.6 * 10 ** (gain_db / 20)
    clip = np.zeros(SAMPLE_RATE, np.float32)
    start = int(np.clip((SAMPLE_RATE - y.size) / 2 + shift * SAMPLE_RATE, 0, SAMPLE_RATE - y.size))
    clip[start : start + y.size] = y
    bank = noise_bank[noise]
    off = int(rng.integers(0, bank.size - SAMPLE_RATE + 1))
    sig_rms = np.sqrt(np.mean(y**2)) + 1e-9
    n = bank[off : off + SAMPLE_RATE]
    clip += n * (sig_rms / (np.sqrt(np.mean(n**2)) + 1e-12)) * 10 ** (-snr_db / 20)
    pcm = (np.clip(clip, -1.0, 1.0) * 32767).astype(np.int16)
    return {
        "word": word,
        "index": index,
        "speaker": speaker,
        "voice": f"{dialect}+{variant}",
        "pitch": pitch,
        "speed": speed,
        "gain_db": round(gain_db, 2),
        "noise": noise,
        "snr_db": round(snr_db, 2),
        "pcm": pcm,
    }


def synthesize(
    words="google13",
    out="datasets/synthetic_speech",
    per_word: int = 50,
    seed: int = 0,
    negatives: bool = True,
    negatives_per_word: int | None = None,
    noise_seconds: float = 60.0,
    workers: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> Path:
    """Speak ``words`` with espeak-ng into the Speech Commands v0.01 layout under ``out``.

    ``words``: a preset (``google12``, ``google13``, ``google30``, ``google35``), a comma-separated string or
    a list. For ``google12``/``google13`` the presets add :data:`NEGATIVE_WORDS` (``negatives_per_word``
    clips each, default ``per_word // 2``) so the ``_unknown_`` class is populated. Returns ``out``.
    """
    keywords, negs = resolve_words(words, negatives)  # before anything else: a bad word writes nothing
    exe = espeak_path()
    per_neg = max(1, per_word // 2) if negatives_per_word is None else negatives_per_word
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} is not empty (pass overwrite=True / --overwrite to add to it)")
    variants = available_variants(exe)
    rng = np.random.default_rng([seed, 7])
    n_noise = max(int(noise_seconds * SAMPLE_RATE), 2 * SAMPLE_RATE)
    bank = {k: make_noise(k, n_noise, rng) for k in NOISES}
    (out / BACKGROUND).mkdir(parents=True, exist_ok=True)
    for k, y in bank.items():
        sf.write(out / BACKGROUND / f"{k}.wav", y, SAMPLE_RATE, subtype="PCM_16")
    (out / BACKGROUND / "README.md").write_text(
        "Generated background noise (white, pink, brown noise and 50 Hz mains hum), "
        f"{n_noise / SAMPLE_RATE:.0f} s each, 16 kHz mono, written by strrnn.data.synthesize.\n"
    )
    jobs = [(w, i) for w in keywords for i in range(per_word)] + [(w, i) for w in negs for i in range(per_neg)]
    for w in keywords + negs:
        (out / w).mkdir(exist_ok=True)
    from tqdm.auto import tqdm

    rows, lists = [], {"validation": [], "testing": []}
    seen: dict[tuple[str, str], int] = {}
    t0 = time.perf_counter()
    workers = workers or 2 * (os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(lambda job: render_clip(exe, job[0], job[1], seed, variants, bank), jobs)
        for r in tqdm(results, total=len(jobs), desc="synthesize", unit="clip", disable=not progress, leave=False):
            k = seen.get((r["word"], r["speaker"]), 0)
            seen[(r["word"], r["speaker"])] = k + 1
            rel = f"{r['word']}/{r['speaker']}_nohash_{k}.wav"
            sf.write(out / rel, r.pop("pcm"), SAMPLE_RATE, subtype="PCM_16")
            split = which_set(rel)
            if split in lists:
                lists[split].append(rel)
            rows.append({"path": rel, "split": split, **r})
    for split, fname in (("validation", "validation_list.txt"), ("testing", "testing_list.txt")):
        (out / fname).write_text("".join(f"{p}\n" for p in sorted(lists[split])))
    with open(out / "metadata.csv", "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["path"])
        wr.writeheader()
        wr.writerows(rows)
    elapsed = time.perf_counter() - t0
    (out / "README.md").write_text(
        "# Synthetic speech commands (strrnn.data.synthesize)\n\n"
        f"Keywords: {', '.join(keywords)}\nNegative words: {', '.join(negs) or '-'}\n"
        f"Clips: {per_word} per keyword, {per_neg if negs else 0} per negative word; seed {seed}.\n"
        "Layout and format as Google Speech Commands v0.01 (16 kHz, 1 s, 16-bit mono WAV); split by speaker "
        "hash into validation_list.txt / testing_list.txt. Voices: espeak-ng; see metadata.csv.\n"
        f"Rendered in {elapsed:.1f} s with {workers} parallel espeak-ng processes.\n"
    )
    return out
