"""--threads: one thread for small recurrent models by default, data-loader workers that fit beside it."""

from __future__ import annotations

import pytest

from strrnn.cli import threads, train


def test_small_recurrent_models_default_to_one_thread():
    assert threads.choose_threads(None, None, 100, "fsdd") == 1  # FSDD's default model is the keyword spotter
    assert threads.choose_threads(None, "keyword_spotter", threads.ONE_THREAD_HIDDEN, "google12") == 1
    assert threads.choose_threads(None, "keyword_spotter", threads.ONE_THREAD_HIDDEN + 1, "google12") is None
    assert threads.choose_threads(None, None, 100, "digits") is None  # a CNN: torch's default
    assert threads.choose_threads(None, "resnet18", 100, "fsdd_image") is None
    assert threads.choose_threads(3, "keyword_spotter", 100, "fsdd") == 3  # asked for: given
    with pytest.raises(ValueError, match="--threads must be at least 1"):
        threads.choose_threads(0, None, 100, "fsdd")


def test_workers_never_oversubscribe_the_cores(monkeypatch):
    monkeypatch.setattr(threads, "available_cores", lambda: 4)
    assert threads.fit_workers(8, 1) == 3  # one compute thread leaves three cores
    assert threads.fit_workers(2, 1) == 2
    assert threads.fit_workers(8, None) == 0  # torch's default threads take every core on the CPU
    assert threads.fit_workers(8, None, accelerated=True) == 3  # the GPU computes: the process keeps one core
    assert threads.fit_workers(0, 1) == 0


def test_the_flag_is_validated_and_operational(tmp_path):
    config = train.parse_config(["--threads", "2", "--out", str(tmp_path / "x")])
    assert config["threads"] == 2 and "threads" in train.OPERATIONAL
    with pytest.raises(train.UsageError, match="--threads must be a positive integer"):
        train.parse_config(["--threads", "0", "--out", str(tmp_path / "x")])


def test_a_training_process_computes_with_the_chosen_threads(tmp_path, monkeypatch):
    import torch

    seen = {}
    monkeypatch.setattr(torch, "set_num_threads", lambda n: seen.setdefault("threads", n))
    config = train.parse_config(["--dataset", "fsdd", "--num-workers", "64", "--out", str(tmp_path / "x")])
    train.set_threads(config)
    assert seen["threads"] == 1
    assert config["num_workers"] == threads.available_cores() - 1


def test_scoring_a_run_picks_the_threads_from_its_configuration(tmp_path):
    import yaml

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"dataset": "fsdd", "model": None, "hidden_size": 100}))
    assert threads.threads_for_run(run, None) == 1
    assert threads.threads_for_run(run / "exported.pt", None) == 1  # the run's exported.pt: its folder's config
    assert threads.threads_for_run(run, 4) == 4
    assert threads.threads_for_run(tmp_path / "missing", None) is None
    (run / "config.yaml").write_text(yaml.safe_dump({"dataset": "digits", "hidden_size": 100}))
    assert threads.threads_for_run(run, None) is None


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_evaluate_and_predict_refuse_a_bad_thread_count(tmp_path, capsys, command):
    from strrnn.cli import main

    args = ["--run", str(tmp_path)] if command == "evaluate" else [str(tmp_path), "x.wav"]
    assert main([command, *args, "--threads", "0"]) == 2
    assert "--threads must be at least 1" in capsys.readouterr().err
