"""What joins data, models and STR for a run: registries, the mode, learned ranks, the exported artifact.

Shared by ``python -m strrnn.train``, ``strrnn.evaluate``, ``strrnn.export`` and ``strrnn.compare`` so that
a run folder is read back exactly as it was written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import torch
import yaml
from torch import nn

from . import data as sdata
from . import models as smodels
from .fileio import atomic_path, load_checkpoint_file
from .lowrank import LowRankSTR, _originals, lowrank, lowrank_rnn
from .report import iter_str_tensors
from .unstructured import sparsify

__all__ = [
    "dataset_names", "default_data_dir", "build_datamodule", "build_model", "apply_mode", "rank_targets",
    "learned_ranks", "count_params", "dense_twin", "save_exported", "load_exported", "EXPORT_FORMAT",
]

SPEECH_COMMANDS = ("google12", "google13", "google30", "google35")
EXPORT_FORMAT = 1


def dataset_names() -> list[str]:
    """Every dataset ``--dataset`` accepts."""
    names = list(sdata.names())
    try:
        from cnn import data as cnn_data

        names += [n for n in cnn_data.names() if n not in names]
    except ImportError:
        pass
    return names


def default_data_dir(config: dict) -> Path | None:
    """``--data-dir`` if given, else the data set's own variable (``$STRRNN_FSDD``), else ``$STRRNN_DATA/<folder>``
    or ``datasets/<folder>``."""
    if config.get("data_dir"):
        return Path(config["data_dir"])
    name = config["dataset"]
    if name in ("mnist5k", "digits"):
        return None  # shipped by packages
    if name == "fsdd" and os.environ.get("STRRNN_FSDD"):
        return Path(os.environ["STRRNN_FSDD"])
    if name in SPEECH_COMMANDS:
        if config.get("synthetic"):  # never mixed with real data; one folder per synthesis setting
            folder = f"synthetic_{name}_p{config.get('synthetic_per_word', 60)}"
        else:
            folder = "speech_commands_v0.02" if name == "google35" else "speech_commands_v0.01"
    else:
        folder = name
    base = Path(os.environ.get("STRRNN_DATA", "datasets"))
    return base / folder


def build_datamodule(config: dict):
    """The Lightning data module of ``config`` (synthesizing Speech Commands first when asked)."""
    name = config["dataset"]
    root = default_data_dir(config)
    options = {"batch_size": config["batch_size"], "num_workers": config["num_workers"], "seed": config["seed"]}
    if name in sdata.names():
        if name in SPEECH_COMMANDS or name == "fsdd" or name == "speech_commands":
            options["features"] = config.get("features", "logmel32")
        if name in SPEECH_COMMANDS:
            options["download"] = bool(config.get("download"))
            if config.get("synthetic") and not (root / "testing_list.txt").is_file():
                sdata.synthesize(words=name, out=root, per_word=config.get("synthetic_per_word", 60),
                                 seed=config["seed"], overwrite=True)
        if config.get("normalization") is not None:
            options["normalization"] = config["normalization"]
        return sdata.get(name, root, **options)
    from cnn import data as cnn_data

    return cnn_data.get(name, root, **options)


def _is_sequence(datamodule) -> bool:
    return len(datamodule.input_shape) == 2


def build_model(config: dict, datamodule) -> nn.Module:
    """The model (no STR yet): a recurrent classifier for sequences, a CNN for images."""
    if _is_sequence(datamodule):
        name = config.get("model") or ("har" if config["dataset"].startswith("har") else "keyword_spotter")
        return smodels.build(name, n_features=datamodule.num_features, n_classes=datamodule.num_classes,
                             cell=config["cell"], hidden_size=config["hidden_size"], num_layers=config["num_layers"],
                             pooling=config.get("pooling", "last"))
    from cnn import models as cnn_models

    name = config.get("model") or "small_cnn"
    return cnn_models.build(name, num_classes=datamodule.num_classes, in_channels=datamodule.input_shape[0])


def dense_twin(config: dict, datamodule) -> nn.Module:
    """A fresh dense model of the same architecture (for parameter counts)."""
    return build_model(config, datamodule)


# what must agree between an STR run and a fixed-rank run trained at its ranks: the same tensor names can mean
# different shapes (an LSTM's W is 4H x in, a FastGRNN's H x in), so a mismatch would train the wrong budget
_ARCHITECTURE_KEYS = ("model", "cell", "hidden_size", "num_layers", "features")


def _budget_ranks(run_dir: str | os.PathLike, config: dict | None = None) -> dict[str, int]:
    """The ranks an STR run folder learned, ``{"rnn.cells.0.W": r_W, ...}``, checked against ``config``'s model."""
    path = Path(run_dir)
    summary = path / "summary.json"
    if not summary.is_file():
        raise ValueError(f"--budget-from {path}: no summary.json there (is it a finished strrnn.train run folder?)")
    ranks = json.loads(summary.read_text()).get("ranks") or {}
    if not ranks:
        raise ValueError(f"--budget-from {path}: that run learned no ranks (was it --mode lowrank?)")
    source_config = path / "config.yaml"
    if config is not None and source_config.is_file():
        source = yaml.safe_load(source_config.read_text()) or {}
        # an unset --model means the data set's default model: comparable only when both runs name one
        differ = [f"--{k.replace('_', '-')} {config.get(k)} here, {source[k]} there"
                  for k in _ARCHITECTURE_KEYS if k in source and source[k] != config.get(k)
                  and not (k == "model" and None in (source[k], config.get(k)))]
        if differ:
            raise ValueError(f"--budget-from {path}: that run trained a different model ({'; '.join(differ)}); "
                             "pass the same model flags as the STR run")
    return {k: int(v) for k, v in ranks.items()}


def apply_mode(model: nn.Module, config: dict) -> nn.Module:
    """Parametrize ``model`` for ``config['mode']`` (dense leaves it untouched)."""
    mode = config["mode"]
    g = config.get("g")
    if mode == "lowrank":
        lowrank_rnn(model, factors=config["factors"], g=g or "exp", s_init=config["s_init"],
                    min_rank=config["min_rank"])
    elif mode == "fixed-rank":
        if config.get("budget_from"):
            ranks = _budget_ranks(config["budget_from"], config)
            for key, rank in ranks.items():
                path, _, name = key.rpartition(".")
                try:
                    module = model.get_submodule(path)
                except AttributeError:
                    raise ValueError(f"--budget-from: tensor {key} does not exist in this model") from None
                lowrank(module, name, max_rank=rank, threshold=False, factors=config["factors"])
        else:
            # an unspecified rank means full rank for that weight (of every layer)
            max_rank = {"W": config.get("rank_w"), "U": config.get("rank_u")}
            lowrank_rnn(model, max_rank=max_rank, threshold=False, factors=config["factors"])
    elif mode == "unstructured":
        sparsify(model, g=g or "sigmoid", s_init=config["s_init"])
    elif mode == "dnw":
        from cnn.pruning import apply_dnw

        apply_dnw(model, pruning_targets(model, config))
    elif mode == "magnitude":
        from cnn.pruning import apply_magnitude_pruning

        apply_magnitude_pruning(model, pruning_targets(model, config))
    # gmp: masks are registered by its Lightning callback (strrnn.train.build_callbacks)
    return model


def pruning_targets(model: nn.Module, config: dict) -> dict[str, float]:
    """Per-layer sparsity targets of a pruning baseline: ``--sparsity`` spread uniformly or by ERK, or the
    budget an unstructured STR run learned (``--budget-from``)."""
    from cnn.budget import budget_targets

    return budget_targets(model, budget_from=config.get("budget_from"), sparsity=config.get("sparsity"),
                          distribution=config.get("budget_distribution", "uniform"))


def export_model(model: nn.Module) -> nn.Module:
    """:func:`strrnn.export` plus, for CNN pruning baselines, their masks folded into exact zeros."""
    from .export import export

    small = export(model)
    try:
        from cnn.pruning import fold_masks
    except ImportError:
        return small
    return fold_masks(small)


def flops_profile(model: nn.Module, datamodule):
    """``cnn.flops.profile`` for image models (None for sequence models)."""
    if _is_sequence(datamodule):
        return None
    from cnn.flops import profile

    return profile(model, tuple(datamodule.input_shape))


def rank_targets(model: nn.Module, rank_w: int, rank_u: int) -> dict[str, int]:
    """``--target-rank W,U`` as ``{"<path>.W": rank_w, "<path>.U": rank_u}`` over every recurrent cell."""
    targets = {}
    for path, _module, name, p in iter_str_tensors(model):
        if isinstance(p, LowRankSTR) and name in ("W", "U"):
            targets[f"{path}.{name}"] = rank_w if name == "W" else rank_u
    return targets


def learned_ranks(model: nn.Module) -> dict[str, int]:
    """``{"<path>.<tensor>": rank}`` for every low-rank tensor of ``model`` (paths relative to ``model``)."""
    out = {}
    for path, module, name, p in iter_str_tensors(model):
        if isinstance(p, LowRankSTR):
            out[f"{path}.{name}"] = p.rank_of(_originals(module, name)[1])
    return out


def count_params(model: nn.Module) -> int:
    """Number of parameters (after export: what is stored)."""
    return sum(p.numel() for p in model.parameters())


def save_exported(path: Path, small: nn.Module, config: dict, ranks: dict[str, int], datamodule) -> None:
    """Write ``exported.pt``: the exported state dict plus what is needed to rebuild it (all plain data)."""
    payload = {
        "format": EXPORT_FORMAT,
        "config": {k: v for k, v in config.items() if isinstance(v, (str, int, float, bool, list, type(None)))},
        "ranks": ranks,
        "class_names": list(datamodule.class_names),
        "input_shape": list(datamodule.input_shape),
        "num_features": int(datamodule.num_features),
        "normalization": getattr(datamodule, "normalization", None),
        "state_dict": small.state_dict(),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


class _Shape:
    """Stands in for a data module when rebuilding a model from an exported artifact."""

    def __init__(self, payload: dict) -> None:
        self.input_shape = tuple(payload["input_shape"])
        self.num_features = payload["num_features"]
        self.num_classes = len(payload["class_names"])
        self.class_names = payload["class_names"]


def load_exported(path: str | os.PathLike) -> tuple[nn.Module, dict]:
    """Rebuild the exported model of a run folder (or an ``exported.pt``) and load its weights.

    Returns ``(model, payload)``. Loaded with ``weights_only=True``.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "exported.pt"
    if not path.is_file():
        raise ValueError(f"{path} not found: is this a finished strrnn.train run folder?")
    payload = load_checkpoint_file(path)
    if not isinstance(payload, dict) or payload.get("format") != EXPORT_FORMAT:
        raise ValueError(f"{path}: unsupported exported format {payload.get('format')!r}")
    config = payload["config"]
    model = build_model(config, _Shape(payload))
    if config["mode"] == "fixed-rank" and config.get("budget_from"):
        _fixed_from(model, config, payload["ranks"])
    elif config["mode"] not in ("gmp", "dnw", "magnitude"):  # pruning masks were folded into plain weights
        apply_mode(model, config)
    for path_name, rank in payload["ranks"].items():
        module_path, _, name = path_name.rpartition(".")
        module = model.get_submodule(module_path)
        p = next(q for q in module.parametrizations[name] if isinstance(q, LowRankSTR))
        if p.threshold is not None:
            with torch.no_grad():
                # give the spectrum distinct magnitudes so that freezing keeps exactly `rank` entries
                _originals(module, name)[1].copy_(torch.linspace(1.0, 0.5, p.max_rank))
            p.freeze_rank(rank)
    small = export_model(model)
    small.load_state_dict(payload["state_dict"])
    return small.eval(), payload


def _fixed_from(model: nn.Module, config: dict, ranks: dict[str, int]) -> None:
    for key, rank in ranks.items():
        path, _, name = key.rpartition(".")
        lowrank(model.get_submodule(path), name, max_rank=rank, threshold=False, factors=config["factors"])


def read_summaries(run_dirs) -> pd.DataFrame:
    """One row per run folder with its ``summary.json`` flattened (ranks as a compact string)."""
    rows = []
    for run_dir in run_dirs:
        path = Path(run_dir) / "summary.json"
        if not path.is_file():
            raise ValueError(f"{run_dir}: no summary.json (not a finished strrnn.train run folder)")
        summary = json.loads(path.read_text())
        summary["run"] = str(run_dir)
        ranks = summary.get("ranks") or {}
        summary["ranks"] = ",".join(str(ranks[k]) for k in sorted(ranks, key=_rank_order)) if ranks else "full"
        rows.append(summary)
    return pd.DataFrame(rows)


def _rank_order(key: str) -> tuple:
    # W before U within a cell, cells in order
    path, _, name = key.rpartition(".")
    return (path, {"W": 0, "U": 1}.get(name, 2), name)
