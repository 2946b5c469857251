"""strrnn.load(run).predict / predict_proba and strrnn predict: agreement with evaluate, bad inputs."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest_data import make_speech_tree, tone, write_wav

import strrnn
from strrnn import artifacts as runs
from strrnn.cli.evaluate import evaluate
from strrnn.cli.evaluate import main as evaluate_main
from strrnn.cli.predict import main as predict_main
from strrnn.data.speech_commands import GOOGLE12_WORDS
from strrnn.predictor import InputError, Predictor

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "speech_commands_sample"
HAVE_SAMPLE = (SAMPLE / "_unknown_").is_dir()
FOLDERS = (*GOOGLE12_WORDS, "_unknown_", "_silence_")


def _train_briefly(model, datamodule, steps=40, seed=0):
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    loader = datamodule.train_dataloader()
    done = 0
    while done < steps:
        for x, y in loader:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            done += 1
            if done == steps:
                break
    return model.eval()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, one_thread):
    """A google12 run folder (archive layout of generated clips), written the way python -m strrnn.train writes it."""
    from strrnn.cli.train import build_parser

    base = tmp_path_factory.mktemp("predict")
    root = make_speech_tree(base / "speech_commands_v0.01", (*GOOGLE12_WORDS, "bird", "wow"), per_word=6)
    config = vars(build_parser().parse_args([]))
    config.update(dataset="google12", data_dir=str(root), mode="dense", hidden_size=16, pooling="mean", batch_size=32)
    datamodule = runs.build_datamodule(config)
    datamodule.progress = False
    datamodule.setup()
    torch.manual_seed(0)
    model = _train_briefly(runs.build_model(config, datamodule), datamodule)
    out = base / "run"
    out.mkdir()
    runs.save_exported(out / "exported.pt", runs.export_model(model), config, {}, datamodule)
    return out


@pytest.fixture(scope="module")
def eval_folder(tmp_path_factory):
    """A test-set layout folder: real clips of the sample when present (3 per folder), else generated tones."""
    root = tmp_path_factory.mktemp("testset") / "speech_commands_test_set"
    for k, folder in enumerate(FOLDERS):
        (root / folder).mkdir(parents=True)
        if HAVE_SAMPLE:
            for f in sorted((SAMPLE / folder).glob("*.wav"))[:3]:
                shutil.copy(f, root / folder / f.name)
        else:
            for i in range(3):
                prefix = "bed_" if folder == "_unknown_" else ""
                name = f"{i}.wav" if folder == "_silence_" else f"{prefix}{i:08x}_nohash_0.wav"
                write_wav(root / folder / name, tone(200 + 150 * k, seconds=1.0, seed=i))
    return root


def folder_files(root):
    return [p for folder in FOLDERS for p in sorted((root / folder).glob("*.wav"))]


def test_load_gives_a_predictor_with_the_runs_labels_features_and_normalization(run_dir):
    predictor = strrnn.load(run_dir, device="cpu")
    assert isinstance(predictor, Predictor) and strrnn.load is strrnn.predictor.load
    assert predictor.labels == ["_silence_", "_unknown_", *GOOGLE12_WORDS]
    assert predictor.sample_rate == 16000 and predictor.features.shape == (99, 32)
    assert predictor.device.type == "cpu" and not predictor.model.training
    assert "yes" in repr(predictor)
    with pytest.raises(ValueError, match="not found"):
        strrnn.load(run_dir.parent / "missing")


def test_predict_agrees_with_evaluate_on_the_same_clips(run_dir, eval_folder):
    accuracy, confusion = evaluate(run_dir, data_dir=eval_folder)  # every clip of a folder the run did not train on
    files = folder_files(eval_folder)
    assert int(confusion.values.sum()) == len(files) == 36
    predictor = strrnn.load(run_dir, device="cpu")
    proba = predictor.predict_proba([str(f) for f in files])
    assert proba.shape == (36, 12) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    labels = predictor.predict(files)
    assert labels == [predictor.labels[k] for k in proba.argmax(axis=1)]
    mine = np.zeros((12, 12), np.int64)
    for f, label in zip(files, labels, strict=True):
        mine[predictor.labels.index(f.parent.name), predictor.labels.index(label)] += 1
    np.testing.assert_array_equal(mine, confusion.to_numpy())
    assert accuracy == pytest.approx(np.trace(mine) / mine.sum())


def test_evaluate_scores_a_whole_testset_folder_only_when_it_is_not_the_training_folder(run_dir, eval_folder):
    from strrnn.cli.evaluate import _score_whole_folder
    from strrnn.data import get

    testset, archive = get("google12", eval_folder), get("google12", run_dir.parent / "speech_commands_v0.01")
    assert _score_whole_folder(testset, str(eval_folder), str(archive.root), None)
    assert not _score_whole_folder(testset, str(eval_folder), str(eval_folder), None)  # its held-out speakers only
    assert _score_whole_folder(testset, str(eval_folder), str(eval_folder), True)
    assert not _score_whole_folder(testset, str(eval_folder), str(archive.root), False)
    assert not _score_whole_folder(archive, None, str(archive.root), None)
    with pytest.raises(ValueError, match="not one"):
        _score_whole_folder(archive, str(archive.root), None, True)


def test_waveforms_paths_and_resampled_rates_agree(run_dir, eval_folder):
    predictor = strrnn.load(run_dir, device="cpu")
    files = folder_files(eval_folder)[::4]
    waves = [sf.read(f, dtype="float32")[0] for f in files]
    from_paths = predictor.predict_proba(files)
    np.testing.assert_allclose(predictor.predict_proba(waves), from_paths, atol=1e-6)
    np.testing.assert_allclose(predictor.predict_proba([torch.from_numpy(w) for w in waves]), from_paths, atol=1e-6)
    int16 = [np.round(w * 32768).astype(np.int16) for w in waves]
    np.testing.assert_allclose(predictor.predict_proba(int16), from_paths, atol=1e-5)
    assert predictor.predict(files[0]) == predictor.predict([files[0]])  # a single item is a list of one
    # a 48 kHz file and a 48 kHz waveform are resampled to the run's 16 kHz
    import soxr

    y48 = soxr.resample(waves[0], 16000, 48000)
    p48 = write_wav(eval_folder.parent / "clip48k.wav", y48, sr=48000)
    np.testing.assert_allclose(predictor.predict_proba([p48]), from_paths[:1], atol=0.05)
    np.testing.assert_allclose(predictor.predict_proba([y48], sample_rate=48000), predictor.predict_proba([p48]),
                               atol=1e-4)


def test_bad_inputs_are_named(run_dir, tmp_path):
    predictor = strrnn.load(run_dir, device="cpu")
    good = write_wav(tmp_path / "good.wav", tone(400, seconds=1.0))
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n")
    frameless = tmp_path / "frameless.wav"
    sf.write(frameless, np.zeros(0, np.float32), 16000)
    cases = [
        ([good, tmp_path / "missing.wav"], r"missing.wav: no such file"),
        ([tmp_path], r"is a folder, not an audio file"),
        ([empty], r"empty.wav: empty file"),
        ([text], r"notes.wav: not a readable audio file"),
        ([frameless], r"frameless.wav: not a readable audio file \(no audio frames\)"),
        ([np.zeros((2, 16000), np.float32)], r"waveform 0: shape \(2, 16000\); pass a 1-D mono waveform"),
        ([np.zeros(16000, np.float32), np.zeros((16000, 2))], r"waveform 1: shape \(16000, 2\)"),
        ([np.zeros(0, np.float32)], r"waveform 0: empty \(0 samples\)"),
        ([np.full(16000, np.nan, np.float32)], r"waveform 0: NaN or infinite"),
        ([np.zeros(16000, np.int32)], r"waveform 0: dtype int32"),
        ([42], r"expected a file path or a 1-D waveform array, got int"),
    ]
    for items, message in cases:
        with pytest.raises(InputError, match=message):
            predictor.predict(items)
    with pytest.raises(InputError, match="sample_rate must be positive"):
        predictor.predict([np.zeros(100, np.float32)], sample_rate=0)
    assert issubclass(InputError, ValueError)
    assert predictor.predict_proba([]).shape == (0, 12)


def test_cli_prints_one_label_per_line_and_probabilities(run_dir, eval_folder, capsys):
    files = [str(f) for f in folder_files(eval_folder)[:5]]
    assert predict_main([str(run_dir), *files, "--device", "cpu"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == strrnn.load(run_dir, device="cpu").predict(files)
    assert predict_main([str(run_dir), *files, "--proba", "--device", "cpu"]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert rows[0] == ["file", "label", "_silence_", "_unknown_", *GOOGLE12_WORDS]
    assert [r[0] for r in rows[1:]] == files and [r[1] for r in rows[1:]] == out
    np.testing.assert_allclose([sum(map(float, r[2:])) for r in rows[1:]], 1.0, atol=1e-4)


def test_cli_bad_inputs_exit_2_with_one_line(run_dir, tmp_path, capsys):
    (tmp_path / "junk.wav").write_text("junk")
    (tmp_path / "exported.pt").write_bytes(b"PK\x03\x04 truncated")
    for argv, message in (
        ([str(run_dir), str(tmp_path / "absent.wav")], "absent.wav: no such file"),
        ([str(run_dir), str(tmp_path / "junk.wav")], "junk.wav: not a readable audio file"),
        ([str(tmp_path / "norun"), str(tmp_path / "junk.wav")], "is this a finished strrnn.train run folder"),
        ([str(tmp_path), str(tmp_path / "junk.wav")], "exported.pt"),
        ([str(run_dir), "a.wav", "--batch-size", "0"], "--batch-size must be at least 1"),
    ):
        assert predict_main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and "weights_only" not in err
        assert len(err.strip().splitlines()) == 1 and err.startswith("strrnn predict: error: ")


def test_evaluate_cli_scores_a_testset_folder(run_dir, eval_folder, capsys):
    assert evaluate_main(["--run", str(run_dir), "--data-dir", str(eval_folder)]) == 0
    out = capsys.readouterr().out
    assert "on 36 clips of" in out and (run_dir / "confusion_test.csv").is_file()
    assert evaluate_main(["--run", str(run_dir), "--data-dir", str(eval_folder), "--split", "val", "--all-clips"]) == 2
    assert "use --split test" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_predictions_match_the_cpu(run_dir, eval_folder):
    files = folder_files(eval_folder)
    cpu = strrnn.load(run_dir, device="cpu").predict_proba(files)
    gpu = strrnn.load(run_dir, device="cuda")
    assert next(gpu.model.parameters()).is_cuda
    np.testing.assert_allclose(gpu.predict_proba(files), cpu, atol=1e-4)
