"""Synthetic speech in the Speech Commands layout (needs espeak-ng; skipped with the reason otherwise)."""

import runpy
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

import strrnn.data as data
from strrnn.data.errors import MissingToolError
from strrnn.data.speech_commands import which_set

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng not installed (apt-get install espeak-ng)"
)


@needs_espeak
def test_layout_format_and_determinism(tmp_path):
    out = data.synthesize("yes,no", tmp_path / "a", per_word=8, seed=3, noise_seconds=3, progress=False)
    wavs = sorted(out.glob("yes/*.wav")) + sorted(out.glob("no/*.wav"))
    assert len(wavs) == 16
    for p in wavs[:4]:
        info = sf.info(p)
        assert (info.samplerate, info.frames, info.channels, info.subtype) == (16000, 16000, 1, "PCM_16")
        assert "_nohash_" in p.name
    bg = sorted(p.name for p in (out / "_background_noise_").glob("*.wav"))
    assert bg == ["brown_noise.wav", "hum.wav", "pink_noise.wav", "white_noise.wav"]
    for fname, split in (("validation_list.txt", "validation"), ("testing_list.txt", "testing")):
        for rel in (out / fname).read_text().split():
            assert (out / rel).is_file() and which_set(rel) == split
    assert (out / "metadata.csv").read_text().count("\n") == 17
    again = data.synthesize("yes,no", tmp_path / "b", per_word=8, seed=3, noise_seconds=3, progress=False)
    a, _ = sf.read(wavs[0])
    b, _ = sf.read(again / wavs[0].relative_to(out))
    np.testing.assert_array_equal(a, b)
    with pytest.raises(FileExistsError):
        data.synthesize("yes,no", out, per_word=1, progress=False)


@needs_espeak
def test_cli_google13_then_data_module(tmp_path):
    out = tmp_path / "g13"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "strrnn",
            "synthesize",
            "--words",
            "google13",
            "--out",
            str(out),
            "--per-word",
            "6",
            "--noise-seconds",
            "2",
            "--quiet",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stdout
    dm = data.get("google13", out, progress=False)
    dm.setup()
    assert dm.num_classes == 13 and (dm.train_set.targets == 0).sum() > 0  # negative class populated
    dm12 = data.get("google12", out, progress=False, cache_dir=tmp_path / "c12")
    with pytest.raises(data.LayoutError, match="left/"):  # google13 words lack left, right, stop, down
        dm12.setup()


def test_missing_espeak_says_how_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("STRRNN_ESPEAK", str(tmp_path / "no-such-espeak"))
    with pytest.raises(MissingToolError, match="apt-get install espeak-ng"):
        data.synthesize("yes", tmp_path / "x", per_word=1, progress=False)
    from strrnn.cli.synthesize import main

    assert main(["--out", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err
    assert "apt-get install espeak-ng" in err and "Traceback" not in err


@pytest.mark.parametrize("bad", ["../x", "a/b", "..", ".hidden", "_background_noise_", "a\\b", "-rf", "x\x00y"])
def test_words_must_be_plain_folder_names(tmp_path, monkeypatch, bad):
    monkeypatch.setenv("STRRNN_ESPEAK", str(tmp_path / "no-such-espeak"))  # the word check comes first
    with pytest.raises(ValueError, match=r"invalid word .*becomes a folder under --out"):
        data.synthesize(["yes", bad], tmp_path / "out", per_word=1, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # neither out nor anything beside it


def test_ordinary_words_are_accepted():
    from strrnn.data.synth import resolve_words

    assert resolve_words(" yes , turn on,don't,café,yes") == (["yes", "turn on", "don't", "café"], [])


def test_cli_refuses_words_that_leave_out(tmp_path, monkeypatch, capsys):
    # `python -m strrnn synthesize --words "yes,../x" --out out`, run in-process (a subprocess
    # spends seconds importing torch): a usage error, exit 2, one line, nothing written anywhere
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["strrnn", "synthesize", "--words", "yes,../x", "--out", "out", "--quiet"])
    with pytest.raises(SystemExit) as info:
        runpy.run_module("strrnn", run_name="__main__", alter_sys=True)
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    assert "error: invalid word '../x'" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no out/, and no x beside it
