"""Features: shapes, framing, alignment, mono mix-down, resampling."""

from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf
from conftest_data import tone, write_wav

from strrnn.data import FeatureConfig, compute_features, feature_config, fix_length, load_audio
from strrnn.data.audio import Item, load_item
from strrnn.data.features import extract_features, fbank_filters


@pytest.mark.parametrize(
    "name,shape",
    [("logmel32", (99, 32)), ("logmel40", (99, 40)), ("mfcc", (99, 13)), ("fbank32", (99, 32)), ("classic", (99, 32))],
)
def test_presets_shapes(name, shape):
    cfg = feature_config(name)
    assert cfg.shape == shape
    out = compute_features(np.random.default_rng(0).standard_normal((3, 16000)).astype(np.float32), cfg)
    assert out.shape == (3, *shape) and out.dtype == np.float32 and np.isfinite(out).all()


def test_unknown_preset_and_bad_alignment():
    with pytest.raises(ValueError, match="logmel32"):
        feature_config("nope")
    with pytest.raises(ValueError, match="alignment"):
        FeatureConfig(alignment="middle")


def test_frames_match_a_direct_numpy_definition():
    """Frame t = samples [160 t, 160 t + 400), Hann window, |rfft_512|^2, librosa mel bank, log."""
    cfg = feature_config("logmel32")
    y = np.random.default_rng(1).standard_normal(16000).astype(np.float32)
    padded = np.pad(y, (0, 400 + 98 * 160 - 16000))
    frames = np.stack([padded[160 * t : 160 * t + 400] for t in range(99)])
    win = librosa.filters.get_window("hann", 400, fftbins=True)
    power = np.abs(np.fft.rfft(frames * win, n=512)) ** 2
    ref = np.log(power @ librosa.filters.mel(sr=16000, n_fft=512, n_mels=32).T + cfg.eps)
    np.testing.assert_allclose(compute_features(y, cfg), ref, rtol=1e-3, atol=1e-3)


def test_fix_length_alignments():
    y = np.arange(1, 5, dtype=np.float32)
    assert fix_length(y, 6, "end").tolist() == [0, 0, 1, 2, 3, 4]
    assert fix_length(y, 6, "start").tolist() == [1, 2, 3, 4, 0, 0]
    assert fix_length(y, 6, "center").tolist() == [0, 1, 2, 3, 4, 0]
    assert fix_length(y, 2, "end").tolist() == [3, 4]
    assert fix_length(y, 2, "start").tolist() == [1, 2]
    assert fix_length(y, 2, "center").tolist() == [2, 3]


def test_end_alignment_puts_the_word_in_the_last_frames(tmp_path):
    p = write_wav(tmp_path / "short.wav", tone(800, seconds=0.3))
    cfg = feature_config("logmel32")  # alignment="end"
    f_end = compute_features(load_item(Item(str(p)), 16000, 16000, "end"), cfg)
    f_start = compute_features(load_item(Item(str(p)), 16000, 16000, "start"), cfg)
    assert f_end[-5:].mean() > f_end[:5].mean() + 5
    assert f_start[:5].mean() > f_start[-5:].mean() + 5


def test_stereo_is_mixed_to_mono(tmp_path):
    y = tone(500, seconds=1.0)
    mono = write_wav(tmp_path / "mono.wav", y)
    stereo = tmp_path / "stereo.wav"
    sf.write(stereo, np.stack([y, y], axis=1), 16000, subtype="PCM_16")
    np.testing.assert_allclose(load_audio(str(stereo)), load_audio(str(mono)), atol=1e-4)


def test_wrong_sample_rate_is_resampled(tmp_path):
    p8 = write_wav(tmp_path / "t8.wav", tone(440, seconds=1.0, sr=8000, noise=0), sr=8000)
    p16 = write_wav(tmp_path / "t16.wav", tone(440, seconds=1.0, sr=16000, noise=0))
    a, b = load_audio(str(p8)), load_audio(str(p16))
    assert a.shape == b.shape == (16000,)
    cfg = feature_config("logmel32")
    fa, fb = compute_features(a, cfg), compute_features(b, cfg)
    assert fa.mean(0).argmax() == fb.mean(0).argmax()  # same dominant mel band
    assert np.corrcoef(fa.mean(0), fb.mean(0))[0, 1] > 0.95


def test_extract_features_reports_unreadable_files(tmp_path):
    good = write_wav(tmp_path / "good.wav", tone(300))
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 16000)
    feats, badlist = extract_features(
        [Item(str(good)), Item(str(bad)), Item(str(empty))], feature_config("logmel32"), progress=False
    )
    assert feats.shape == (3, 99, 32)
    assert sorted(i for i, _ in badlist) == [1, 2]
    assert "bad.wav" in badlist[0][1]


# ---------------------------------------------------------------------------------------------------------
# The classic (EdgeML / python_speech_features) log filter-bank
# ---------------------------------------------------------------------------------------------------------
SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "speech_commands_sample"
needs_sample = pytest.mark.skipif(not (SAMPLE / "_unknown_").is_dir(), reason=f"Speech Commands sample not at {SAMPLE}")


def psf_reference(path):
    """EdgeML's features: python_speech_features.fbank on the int16 samples, log(x + 1e-10)."""
    psf = pytest.importorskip("python_speech_features")
    from scipy.io import wavfile

    rate, signal = wavfile.read(path)
    assert signal.dtype == np.int16
    feat, _ = psf.fbank(signal, rate, winlen=0.025, winstep=0.01, nfilt=32, nfft=512, lowfreq=0, highfreq=None,
                        preemph=0.97, winfunc=np.hamming)
    return np.log(feat + 1e-10)


@needs_sample
def test_classic_preset_matches_python_speech_features_on_real_clips():
    files = [sorted((SAMPLE / d).glob("*.wav"))[k] for d in ("yes", "no", "up", "_unknown_", "_silence_")
             for k in (0, 7, 31)]
    cfg = feature_config("classic")
    ours = compute_features(np.stack([load_audio(str(f)) for f in files]), cfg)  # batched path
    for f, got in zip(files, ours, strict=True):
        ref = psf_reference(f)
        assert got.shape == ref.shape == (99, 32)
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5, err_msg=str(f))
    # the librosa default differs by design (Hann, Slaney mel, no pre-emphasis, [-1, 1] samples)
    default = compute_features(load_audio(str(files[0])), feature_config("logmel32"))
    assert np.abs(default - psf_reference(files[0])).max() > 1.0


def test_classic_preset_matches_python_speech_features_on_a_short_clip(tmp_path):
    """A 0.3-s word, end-aligned into one second (leading zeros: log(1e-10) rows), as the data modules read it."""
    p = write_wav(tmp_path / "short.wav", tone(900, seconds=0.3))
    y = load_item(Item(str(p)), 16000, 16000, "end")
    padded = write_wav(tmp_path / "padded.wav", y)
    got = compute_features(y, feature_config("fbank32"))
    np.testing.assert_allclose(got, psf_reference(padded), rtol=1e-4, atol=1e-5)
    assert got[:10].max() < -20  # all-zero frames: log(1e-10) = -23.03 (plus the pre-emphasis of the first sample)


def test_fbank_filters_are_unnormalised_htk_triangles():
    bank = fbank_filters(32, 512, 16000)
    assert bank.shape == (32, 257) and not bank.flags.writeable
    assert np.allclose(bank.max(axis=1), 1.0)  # peak 1 (librosa's Slaney bank is area-normalised instead)
    peaks = bank.argmax(axis=1)
    assert np.all(np.diff(peaks) > 0)  # ordered bands
    # HTK mel: band edges at floor(513 * mel_to_hz(linspace(0, hz_to_mel(8000), 34)) / 16000)
    mels = np.linspace(0, 2595 * np.log10(1 + 8000 / 700), 34)
    edges = np.floor(513 * 700 * (10 ** (mels / 2595) - 1) / 16000).astype(int)
    assert peaks.tolist() == edges[1:-1].tolist()
    psf = pytest.importorskip("python_speech_features")
    np.testing.assert_allclose(bank, psf.get_filterbanks(32, 512, 16000), atol=1e-12)
    with pytest.raises(ValueError, match="fmax"):
        fbank_filters(32, 512, 16000, fmax=9000)
