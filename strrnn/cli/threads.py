"""How many threads a command line computes with (``--threads``), and how many data-loader workers fit beside them.

Small recurrent models run step by step over short matrices: a second intra-op thread has little to share and, on
cores other processes also use, OpenMP's spinning threads wait on each other — measured on a 2-core machine with one
other job running, ``strrnn train --dataset google12`` did 20 epochs in 9 minutes at the default thread count and 22
in under a minute at one thread. So recurrent models up to :data:`ONE_THREAD_HIDDEN` hidden units default to one
thread per process; everything else keeps torch's default (``benchmarks/threads.py`` measures the limit).
"""

from __future__ import annotations

import os

__all__ = ["ONE_THREAD_HIDDEN", "RECURRENT_MODELS", "SEQUENCE_DATASETS", "choose_threads", "available_cores",
           "fit_workers", "threads_for_run", "apply_threads"]

#: recurrent models with at most this many hidden units default to one thread (benchmarks/README.md, "Threads")
ONE_THREAD_HIDDEN = 256
#: models that run a recurrent cell (the speech and sensor models), and the data sets whose default model is one
RECURRENT_MODELS = ("keyword_spotter", "har")
SEQUENCE_DATASETS = ("google12", "google13", "google30", "google35", "speech_commands", "fsdd", "har2", "har6")


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the platform has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def choose_threads(threads: int | None, model: str | None, hidden_size: int, dataset: str | None = None) -> int | None:
    """The intra-op thread count for a run: ``threads`` when given, else 1 for a recurrent model (``model`` in
    :data:`RECURRENT_MODELS`, or, when no model is named, a ``dataset`` of :data:`SEQUENCE_DATASETS`, whose default
    model is one) of at most :data:`ONE_THREAD_HIDDEN` hidden units, else None (torch's default).

    Raises:
        ValueError: ``threads`` below 1.
    """
    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be at least 1, got {threads}")
        return threads
    recurrent = model in RECURRENT_MODELS if model else dataset in SEQUENCE_DATASETS
    return 1 if recurrent and hidden_size <= ONE_THREAD_HIDDEN else None


def fit_workers(num_workers: int, threads: int | None, accelerated: bool = False) -> int:
    """Data-loader workers that fit beside the main process on the available cores — at least 0, at most
    ``num_workers``; each worker computes with one thread. The main process keeps ``threads`` cores (None: torch's
    default, every core — unless the model runs on an accelerator (``accelerated``), where it keeps one)."""
    cores = available_cores()
    kept = threads if threads is not None else (1 if accelerated else cores)
    return min(num_workers, max(0, cores - kept))


def threads_for_run(run, threads: int | None) -> int | None:
    """:func:`choose_threads` for scoring an existing run folder (its ``config.yaml`` names the model); None (torch's
    default) when the folder holds no readable configuration."""
    from pathlib import Path

    import yaml

    if threads is not None:
        return choose_threads(threads, None, 0)
    path = Path(run) if Path(run).is_dir() else Path(run).parent
    try:
        config = yaml.safe_load((path / "config.yaml").read_text()) or {}
        return choose_threads(None, config.get("model"), int(config.get("hidden_size", 0)), config.get("dataset"))
    except (OSError, ValueError, TypeError, AttributeError, yaml.YAMLError):
        return None


def apply_threads(threads: int | None) -> None:
    """``torch.set_num_threads(threads)`` unless None (torch's default)."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
