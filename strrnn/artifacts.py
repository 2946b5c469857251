"""What joins data, models and STR for a run: registries, the mode, learned ranks, the exported artifact.

Shared by the command lines (``strrnn train``, ``evaluate``, ``export``, ``compare``, ``predict``) so that
a run folder is read back exactly as it was written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from cnn import data as cnn_data
from cnn import models as cnn_models
from cnn.flops import profile
from cnn.pruning import fold_masks

from . import data as sdata
from . import models as smodels
from .exporting import export
from .fileio import atomic_path, load_checkpoint_file
from .low_rank import LowRankSTR, originals
from .modes import MODES, UsageError, get_mode
from .reporting import iter_str_tensors

__all__ = [
    "dataset_names", "model_names", "default_data_dir", "build_datamodule", "build_model", "export_model",
    "flops_profile", "learned_ranks", "count_params", "save_exported", "load_exported", "read_summaries",
    "read_summary", "EXPORT_FORMAT",
]

SPEECH_COMMANDS = ("google12", "google13", "google30", "google35")
EXPORT_FORMAT = 1


def dataset_names() -> list[str]:
    """Every dataset ``--dataset`` accepts."""
    names = list(sdata.names())
    return names + [n for n in cnn_data.names() if n not in names]


def model_names() -> list[str]:
    """Every model ``--model`` accepts: the speech models' registry, then the CNNs'."""
    return list(smodels.available()) + [n for n in cnn_models.available() if n not in smodels.available()]


def default_data_dir(config: dict) -> Path | None:
    """``--data-dir`` if given, else the data set's own variable (``$STRRNN_FSDD``, ``$STRRNN_SPEECH_COMMANDS``,
    ...), else ``$STRRNN_DATA/<folder>``, else ``<user data dir>/<folder>`` (:mod:`strrnn.data.paths`)."""
    if config.get("data_dir"):
        return Path(config["data_dir"])
    name = config["dataset"]
    if name == "digits":
        return None  # shipped by scikit-learn
    if name in SPEECH_COMMANDS and config.get("synthetic"):
        # never mixed with real data (so not under $STRRNN_SPEECH_COMMANDS); one folder per synthesis setting
        return sdata.data_root() / f"synthetic_{name}_p{config.get('synthetic_per_word', 60)}"
    return sdata.dataset_dir(name)


def build_datamodule(config: dict):
    """The Lightning data module of ``config`` (synthesizing Speech Commands first when asked)."""
    name = config["dataset"]
    root = default_data_dir(config)
    options = {"batch_size": config["batch_size"], "num_workers": config["num_workers"], "seed": config["seed"]}
    if config.get("download"):
        if (why := sdata.cannot_download(name)) is not None:
            raise UsageError(f"--download cannot fetch --dataset {name}: {why}")
        options["download"] = True
    if name in sdata.names():
        if name in SPEECH_COMMANDS or name == "fsdd" or name == "speech_commands":
            options["features"] = config.get("features", "logmel32")
            if config.get("augment"):
                options["augment"] = True
        if name in SPEECH_COMMANDS:
            if config.get("synthetic") and not (root / "testing_list.txt").is_file():
                sdata.synthesize(words=name, out=root, per_word=config.get("synthetic_per_word", 60),
                                 seed=config["seed"], overwrite=True)
        if config.get("normalization") is not None:
            options["normalization"] = config["normalization"]
        return sdata.get(name, root, **options)
    return cnn_data.get(name, root, **options)


def _is_sequence(datamodule) -> bool:
    return len(datamodule.input_shape) == 2


def build_model(config: dict, datamodule) -> nn.Module:
    """The model (no STR yet): a recurrent classifier for sequences, a CNN for images."""
    if _is_sequence(datamodule):
        name = config.get("model") or ("har" if config["dataset"].startswith("har") else "keyword_spotter")
        return smodels.build(name, in_chans=datamodule.num_features, num_classes=datamodule.num_classes,
                             cell=config["cell"], hidden_size=config["hidden_size"], num_layers=config["num_layers"],
                             pooling=config.get("pooling", "last"))
    name = config.get("model") or "small_cnn"
    return cnn_models.build(name, num_classes=datamodule.num_classes, in_chans=datamodule.input_shape[0])


def export_model(model: nn.Module) -> nn.Module:
    """:func:`strrnn.export` plus, for CNN pruning baselines, their masks folded into exact zeros."""
    return fold_masks(export(model))


def flops_profile(model: nn.Module, datamodule):
    """``cnn.flops.profile`` for image models (None for sequence models)."""
    if _is_sequence(datamodule):
        return None
    return profile(model, tuple(datamodule.input_shape))


def learned_ranks(model: nn.Module) -> dict[str, int]:
    """``{"<path>.<tensor>": rank}`` for every low-rank tensor of ``model`` (paths relative to ``model``)."""
    out = {}
    for path, module, name, p in iter_str_tensors(model):
        if isinstance(p, LowRankSTR):
            out[f"{path}.{name}"] = p.rank_of(originals(module, name)[1])
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


#: what every exported.pt holds (save_exported)
_PAYLOAD_KEYS = ("config", "ranks", "class_names", "input_shape", "num_features", "state_dict")
#: settings added to the configuration since the first exported files, at the value those older runs trained with
_OLDER_CONFIG_DEFAULTS = {"num_layers": 1, "pooling": "last", "model": None}


def _not_exported(path: Path, what: str) -> ValueError:
    return ValueError(f"{path} is {what}, not a strrnn exported model; pass a run folder written by strrnn train "
                      "(or its exported.pt)")


def _read_payload(path: Path) -> dict:
    """The checked contents of an ``exported.pt``: a dict of the current format with every key."""
    if path.suffix.lower() == ".onnx":
        raise _not_exported(path, "an ONNX file (score it with onnxruntime)")
    with path.open("rb") as handle:
        magic = handle.read(4)
    if magic != b"PK\x03\x04":  # torch.save writes a zip archive
        raise _not_exported(path, "not a PyTorch file")
    payload = load_checkpoint_file(path)
    if not isinstance(payload, dict):
        raise _not_exported(path, f"a PyTorch file holding a {type(payload).__name__}")
    if "pytorch-lightning_version" in payload or "optimizer_states" in payload:
        raise _not_exported(path, "a training checkpoint (best.ckpt/last.ckpt)")
    if payload.get("format") != EXPORT_FORMAT:
        raise ValueError(f"{path}: unsupported exported format {payload.get('format')!r} (this strrnn reads "
                         f"format {EXPORT_FORMAT}); export the run again with this version")
    missing = [key for key in _PAYLOAD_KEYS if key not in payload]
    if missing:
        raise ValueError(f"{path}: incomplete exported model (no {', '.join(missing)}); the file is damaged — finish "
                         "or rerun the training to write it again")
    if not isinstance(payload["config"], dict) or not isinstance(payload["state_dict"], dict):
        raise ValueError(f"{path}: damaged exported model (its config or state_dict is not a mapping)")
    return payload


def load_exported(path: str | os.PathLike) -> tuple[nn.Module, dict]:
    """Rebuild the exported model of a run folder (or an ``exported.pt``) and load its weights.

    Returns ``(model, payload)``. Loaded with ``weights_only=True``. A configuration from an older version lacks
    the settings added since: they take the value those runs trained with.

    Raises:
        ValueError: naming the file, for anything but a complete exported model whose weights fit its stored
            configuration and are finite (an ONNX file, a training checkpoint, a damaged or foreign file, NaN
            weights).
    """
    path = Path(path)
    if path.is_dir():
        path = path / "exported.pt"
    if not path.is_file():
        raise ValueError(f"{path} not found: is this a finished strrnn.train run folder?")
    payload = _read_payload(path)
    config = payload["config"] = {**_OLDER_CONFIG_DEFAULTS, **payload["config"]}
    if config.get("mode") not in MODES:
        raise ValueError(f"{path}: trained in mode {config.get('mode')!r}, which this strrnn does not know "
                         f"({', '.join(MODES)})")
    try:
        model = build_model(config, _Shape(payload))
        mode = get_mode(config["mode"])
        if mode.reload is not None:
            mode.reload(model, config, payload["ranks"])
        else:
            mode.apply(model, config)
        small = export_model(model)
        small.load_state_dict(payload["state_dict"])
    except KeyError as err:
        raise ValueError(f"{path}: its stored configuration lacks {err}; the file is damaged or from an "
                         "incompatible version") from None
    except (RuntimeError, TypeError, ValueError, AttributeError, StopIteration) as err:
        # load_state_dict's first line only says that it failed; the second names the first mismatch
        lines = [line.strip() for line in str(err).strip().splitlines()][:2] or [type(err).__name__]
        first = " ".join(lines)
        raise ValueError(f"{path}: its weights do not fit the model its configuration describes ({first[:200]}); "
                         "the file is damaged or was edited") from None
    broken = [name for name, tensor in small.state_dict().items()
              if tensor.is_floating_point() and not torch.isfinite(tensor).all()]
    if broken:
        raise ValueError(f"{path}: the exported model holds NaN or infinite weights ({', '.join(broken[:3])}); it "
                         "cannot score anything — train the run again")
    return small.eval(), payload


def exported_datamodule(payload: dict, data_dir: str | os.PathLike | None = None):
    """The data module an exported run (``payload`` of :func:`load_exported`) reads: the run's settings and its
    stored normalization, at ``data_dir`` when given (default: the run's). Never synthesizes nor downloads."""
    config = dict(payload["config"], normalization=payload.get("normalization"), synthetic=False, download=False)
    if data_dir:
        config["data_dir"] = str(data_dir)
    return build_datamodule(config)


def check_label_set(datamodule, payload: dict) -> None:
    """Raise ``ValueError`` unless the (set-up) ``datamodule`` has the exported run's classes, in its order."""
    if list(datamodule.class_names) != list(payload["class_names"]):
        raise ValueError(f"the data at {datamodule.root} has classes {list(datamodule.class_names)}, the model "
                         f"{list(payload['class_names'])}: use a data set with the run's label set")


def read_summaries(run_dirs) -> pd.DataFrame:
    """One row per run folder with its ``summary.json`` flattened (ranks as a compact string)."""
    rows = []
    for run_dir in run_dirs:
        summary = read_summary(run_dir)
        summary["run"] = str(run_dir)
        ranks = summary.get("ranks") or {}
        summary["ranks"] = ",".join(str(ranks[k]) for k in sorted(ranks, key=_rank_order)) if ranks else "full"
        rows.append(summary)
    return pd.DataFrame(rows)


def read_summary(run_dir) -> dict:
    """The ``summary.json`` of ``run_dir`` as a dict.

    Raises:
        ValueError: naming the file when it is missing, unreadable, not JSON (e.g. truncated) or not an object.
    """
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        raise ValueError(f"{run_dir}: no summary.json (not a finished strrnn.train run folder)")
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot read it ({err})") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}); the file is "
                         "truncated or was edited") from None
    if not isinstance(summary, dict):
        raise ValueError(f"{path}: expected a JSON object of run results, found a {type(summary).__name__}")
    return summary


def _rank_order(key: str) -> tuple:
    # W before U within a cell, cells in order
    path, _, name = key.rpartition(".")
    return (path, {"W": 0, "U": 1}.get(name, 2), name)
