"""Train a keyword spotter (or any registered model) with STR: ``python -m strrnn.train``.

Read top to bottom, a run is:

1. resolve the configuration (defaults < ``--config FILE.yaml`` < command line) and the run folder;
2. build the data module (``strrnn.data`` registry; ``--synthetic`` speaks Speech Commands with espeak-ng);
3. build the model (it knows nothing about STR) and apply the mode from outside:
   ``dense``, ``lowrank`` (LowRankSTR on every recurrent W and U), ``fixed-rank`` (vanilla factorization at
   ``--rank-w/--rank-u`` or at the ranks of ``--budget-from RUN``) or ``unstructured`` (UnstructuredSTR);
4. train with PyTorch Lightning: :class:`strrnn.task.ClassificationTask` plus callbacks for rank logging,
   budget control, checkpoints and the NaN guard;
5. test the best checkpoint and write the run folder: ``config.yaml``, ``metrics.csv``, ``ranks.csv``,
   ``report.csv``/``report.md``, ``best.ckpt``, ``last.ckpt``, ``exported.pt`` and ``summary.json`` (with
   ``--logger tensorboard`` also TensorBoard's event files in ``tensorboard/``).

Example: ``python -m strrnn.train --dataset fsdd --data-dir ../shared/data/fsdd --mode lowrank --epochs 100``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from .. import run_folder
from ..fileio import DiskFullError, atomic_write_text, load_checkpoint_file
from ..optional import require
from ..usage import UsageError, close_match

# torch, Lightning, the data sets and the CNN models take seconds to import: the steps that need them import them,
# so that --help and the configuration (step 1) answer at once.
if TYPE_CHECKING:
    import pytorch_lightning as pl
    import torch

log = logging.getLogger("strrnn")

# ---------------------------------------------------------------------------------------------------------
# 1. configuration
# ---------------------------------------------------------------------------------------------------------
# The names --help lists. Their registries import torch, Lightning and torchvision, seconds that --help should not
# wait for, so they are written out here; validate() asks the registries themselves (a program may register more),
# and tests/test_cli_help.py checks that both agree.
HELP_NAMES = {
    "dataset": ("google12", "google13", "google30", "google35", "speech_commands", "fsdd", "har2", "har6", "mnist5k",
                "digits", "imagenet", "imagefolder", "fsdd_image"),
    "model": ("har", "keyword_spotter", "mobilenetv1", "resnet18", "resnet50", "small_cnn", "spectrogram_cnn"),
    "features": ("logmel32", "logmel40", "mfcc", "fbank32", "classic"),
    "optimizer": ("adam", "adamw", "sgd"),
    "scheduler": ("cosine", "constant", "step"),
    "cell": ("fastgrnn", "fastrnn", "gru", "lstm"),
    "factors": ("free", "orthogonal"),
    "g": ("exp", "sigmoid"),
}
# --mode's help: each registered mode (strrnn.modes) and its summary
MODE_SUMMARIES = {
    "dense": "the model as built",
    "lowrank": "LowRankSTR on every recurrent W and U: STR learns the ranks (thresholds trained by the loss, raised "
               "by --threshold-decay), then fine-tunes at them",
    "lowrank-paper": "the STR paper's low-rank recipe as published: free factors, absolute e^s, --threshold-decay on "
                     "m and s, no fine-tuning phase",
    "lowrank-gmp": "spectral GMP, the baseline: LowRankSTR's thresholds driven (not learned) along GMP's cubic "
                   "schedule to --strength x each matrix's largest singular value, then frozen",
    "fixed-rank": "vanilla factorization at --rank-w/--rank-u or at the ranks of --budget-from RUN",
    "unstructured": "UnstructuredSTR on every conv/linear weight: STR learns each layer's sparsity",
    "gmp": "gradual magnitude pruning (cubic schedule) to --sparsity or an STR run's budget",
    "dnw": "discovering neural wirings: top-k weights forward, dense gradients",
    "magnitude": "one-shot magnitude pruning at initialization",
}
LOGGERS = ("csv", "tensorboard")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each flag's default exactly once: its value, or — for a default that depends on other flags (``None``) —
    the words of its help."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None:
            return action.help or ""
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """argparse with a close-match hint for a mistyped flag and errors on one line (the usage is 40 lines)."""

    def parse_args(self, args=None, namespace=None):
        """Like argparse's, but an unknown flag's error names the closest known one."""
        namespace, extras = self.parse_known_args(args, namespace)
        if extras:
            flags = [option for action in self._actions for option in action.option_strings]
            hints = "".join(close_match(extra.split("=")[0], flags, prefix="--")
                            for extra in extras if extra.startswith("--"))
            self.error(f"unrecognized arguments: {' '.join(extras)}{hints}")
        return namespace

    def error(self, message: str):
        """Print ``message`` on one line and exit with status 2."""
        self.exit(2, f"{self.prog}: error: {message}; see --help\n")


def _one_of(names) -> str:
    return "one of: " + ", ".join(names)


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface: every flag's default is shown once in ``--help``, and every name flag lists
    its choices; an unknown flag exits with status 2, naming the closest one. Needs neither Lightning nor the data
    sets (:data:`HELP_NAMES`)."""
    recipe = ", ".join(_flag_text(k, v) for k, v in _SPEECH_COMMANDS_RECIPE.items())
    p = _Parser(
        prog="python -m strrnn.train", description="Train a keyword spotter (or any registered model) with STR.",
        allow_abbrev=False,
        formatter_class=_HelpFormatter, usage="%(prog)s [--config FILE.yaml] [--FLAG VALUE ...]",
        epilog=f"Speech Commands data sets ({', '.join(DATASET_DEFAULTS)}) default to their measured recipe: "
               f"{recipe}; a flag given on the command line or in --config wins.",
    )
    d = p.add_argument_group("data")
    d.add_argument("--dataset", default="google13", help=_one_of(HELP_NAMES["dataset"]))
    d.add_argument("--data-dir", default=None,
                   help="dataset root (default: the data set's own variable such as $STRRNN_FSDD, else "
                        "$STRRNN_DATA/<name>, else the user data folder)")
    d.add_argument("--download", action="store_true", help="download the data set if absent")
    d.add_argument("--synthetic", action="store_true",
                   help="synthesize the Speech Commands layout with espeak-ng when the data is absent")
    d.add_argument("--synthetic-per-word", type=int, default=60, help="clips per keyword when synthesizing")
    d.add_argument("--features", default="logmel32",
                   help=f"speech features, {_one_of(HELP_NAMES['features'])} (fbank32 = EdgeML's "
                        "python_speech_features log filter-bank; logmel32 = librosa's Hann/Slaney log-mel)")
    d.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="speech: random time shift (±100 ms) and background-noise mixing of training clips "
                        "(default: on for Speech Commands, off otherwise)")
    d.add_argument("--batch-size", type=int, default=100, help="examples per batch")
    d.add_argument("--num-workers", type=int, default=0,
                   help="data-loader worker processes (lowered to what fits beside --threads on the free cores)")

    m = p.add_argument_group("model and STR")
    m.add_argument("--model", default=None,
                   help=f"{_one_of(HELP_NAMES['model'])} (default: the data set's: keyword_spotter, har or "
                        "small_cnn)")
    m.add_argument("--mode", default="lowrank",
                   help="; ".join(f"{name}: {summary}" for name, summary in MODE_SUMMARIES.items()))
    m.add_argument("--cell", default="fastgrnn", help=_one_of(HELP_NAMES["cell"]))
    m.add_argument("--hidden-size", type=int, default=100, help="recurrent models: hidden units per layer")
    m.add_argument("--num-layers", type=int, default=1, help="recurrent models: stacked layers")
    m.add_argument("--pooling", default="last",
                   help="recurrent models: the 'last' state or the 'mean' over frames; " + _one_of(("last", "mean")))
    m.add_argument("--rank-w", type=int, default=None, help="fixed-rank: rank of every W")
    m.add_argument("--rank-u", type=int, default=None, help="fixed-rank: rank of every U")
    m.add_argument("--budget-from", default=None,
                   help="fixed-rank: train at the ranks an STR run folder learned; gmp/dnw/magnitude: prune to the "
                        "per-layer sparsities an unstructured STR run learned")
    m.add_argument("--sparsity", type=float, default=None, help="gmp/dnw/magnitude: overall target sparsity (0-1)")
    m.add_argument("--budget-distribution", default="uniform",
                   help="gmp/dnw/magnitude with --sparsity: " + _one_of(("uniform", "erk")))
    m.add_argument("--factors", default=None,
                   help=f"{_one_of(HELP_NAMES['factors'])} (default: orthogonal for lowrank and lowrank-gmp; free "
                        "— plain A·B — for fixed-rank and lowrank-paper)")
    m.add_argument("--relative", action=argparse.BooleanOptionalAction, default=None,
                   help="lowrank: threshold relative to each matrix's scale, alpha = e^s·max|m| (default: on for "
                        "lowrank, off for lowrank-paper)")
    m.add_argument("--g", default=None,
                   help=f"threshold function, {_one_of(HELP_NAMES['g'])} (default: exp for lowrank and "
                        "lowrank-paper, sigmoid for unstructured)")
    m.add_argument("--s-init", type=float, default=-10.0, help="STR: initial threshold parameter s")
    m.add_argument("--min-rank", type=int, default=1, help="low-rank: spectrum entries the threshold can never cut")
    m.add_argument("--freeze-at", type=float, default=None,
                   help="lowrank, lowrank-gmp: fraction of training where the ranks are frozen and the rest "
                        "fine-tunes at them (default: 0.4)")
    m.add_argument("--debias", type=float, default=None,
                   help="lowrank: fraction of training after --freeze-at over which the soft threshold's shrinkage "
                        "of the kept singular values fades before the fine-tuning (default: 0.2)")
    m.add_argument("--rewarm", action=argparse.BooleanOptionalAction, default=True,
                   help="lowrank, lowrank-gmp: restart the learning-rate schedule where the ranks freeze")
    m.add_argument("--strength", type=float, default=None,
                   help="lowrank-gmp: its knob — directions below this fraction of each matrix's largest singular "
                        "value are pruned by --freeze-at (0 keeps every rank; larger cuts more; default: 0.6)")
    m.add_argument("--schedule-start", type=float, default=None,
                   help="lowrank-gmp: fraction of training where the driven threshold starts rising (default: 0.05)")
    m.add_argument("--target-rank", default=None, help="budget control: 'W,U' ranks for every cell")
    m.add_argument("--target-params", type=int, default=None,
                   help="budget control: total parameters of the low-rank tensors after export")

    o = p.add_argument_group("optimization")
    o.add_argument("--epochs", type=int, default=100, help="training epochs")
    o.add_argument("--lr", type=float, default=1e-3, help="learning rate")
    o.add_argument("--optimizer", default="adam", help=_one_of(HELP_NAMES["optimizer"]))
    o.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    o.add_argument("--scheduler", default="cosine", help=_one_of(HELP_NAMES["scheduler"]))
    o.add_argument("--warmup-epochs", type=int, default=0, help="linear learning-rate warm-up")
    o.add_argument("--weight-decay", type=float, default=1e-3,
                   help="L2 decay λ of the weights (unstructured STR: also the sparsity knob)")
    o.add_argument("--threshold-decay", type=float, default=None,
                   help="STR's knob, the decay λ that raises the learned thresholds (larger cuts more) of lowrank, "
                        "lowrank-paper and unstructured (default: 1.0 for lowrank, --weight-decay for the others)")
    o.add_argument("--threshold-lr", type=float, default=None,
                   help="learning rate of thresholds and spectra (default: strrnn.param_groups')")
    o.add_argument("--decay-warmup", type=float, default=None,
                   help="lowrank, lowrank-paper, unstructured: fraction of training over which the threshold decay "
                        "ramps up from 0 (default: 0.15 for lowrank and unstructured, 0 for lowrank-paper)")
    o.add_argument("--label-smoothing", type=float, default=0.0, help="of the cross-entropy loss")
    o.add_argument("--seed", type=int, default=0, help="of the weights, the data split and the batch order")

    t = p.add_argument_group("hardware, run folder and logs")
    t.add_argument("--threads", type=int, default=None,
                   help="intra-op threads of this process (default: 1 for recurrent models of at most 256 hidden "
                        "units, which slow down with more threads on shared cores; otherwise torch's default)")
    t.add_argument("--accelerator", default="auto", help="cpu, gpu, auto, ... (Lightning)")
    t.add_argument("--devices", default="1", help="number of devices, -1 or 'auto' (Lightning)")
    t.add_argument("--num-nodes", type=int, default=1, help="machines (Lightning)")
    t.add_argument("--strategy", default="auto", help="auto, ddp, ddp_spawn, ... (Lightning)")
    t.add_argument("--precision", default="32-true", help=f"{_one_of(PRECISIONS)} (Lightning)")
    t.add_argument("--out", default=None, help="run folder (default: runs/<dataset>-<mode>-seed<seed>)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from last.ckpt")
    t.add_argument("--overwrite", action="store_true", help="delete --out first if it exists")
    t.add_argument("--logger", nargs="+", default="csv", metavar="NAME",
                   help=f"{_one_of(LOGGERS)}, or both; the CSV log (metrics.csv, which --resume needs) is always "
                        "written, tensorboard adds event files in <out>/tensorboard (pip install "
                        "'strrnn[tensorboard]')")
    t.add_argument("--limit-batches", type=float, default=None,
                   help="use only this fraction (or number) of batches per epoch — for smoke tests")
    t.add_argument("--progress-bar", action=argparse.BooleanOptionalAction, default=True,
                   help="show Lightning's progress bar")
    t.add_argument("--config", default=None, help="YAML file with any of these flags (command line wins)")
    for action in p._actions:
        if action.dest in _SPEECH_COMMANDS_RECIPE and action.default is not None:
            action.help += f"; Speech Commands: {_SPEECH_COMMANDS_RECIPE[action.dest]}"
    return p


def _flag_text(key: str, value) -> str:
    flag = "--" + key.replace("_", "-")
    if isinstance(value, bool):
        return flag if value else f"--no-{flag[2:]}"
    return f"{flag} {value}"


OPERATIONAL = {"resume", "overwrite", "out", "config", "accelerator", "devices", "num_nodes", "strategy",
               "num_workers", "progress_bar", "logger", "strrnn_version", "threads"}


def explicit_flags(argv: list[str]) -> set[str]:
    """Config keys given explicitly on the command line (``--weight-decay 1e-3`` -> ``weight_decay``)."""
    keys = {a[2:].split("=")[0].replace("-", "_") for a in argv if a.startswith("--")}
    return keys | {k[3:] for k in keys if k.startswith("no_")}


def parse_config(argv: list[str]) -> dict:
    """Flag defaults < the data set's recipe (:data:`DATASET_DEFAULTS`) < ``--config`` YAML < explicit command-line
    flags; validated. Raises :class:`UsageError`."""
    parser = build_parser()
    args = parser.parse_args(argv)
    config = vars(parser.parse_args([]))
    given = set(explicit_flags(argv))
    if args.config:
        from_file = read_config_file(parser, Path(args.config))
        config.update(from_file)
        given |= set(from_file)
    config.update({k: v for k, v in vars(args).items() if k in explicit_flags(argv)})
    config["config"] = args.config
    for key, value in DATASET_DEFAULTS.get(config["dataset"], {}).items():
        if key not in given:  # the data set's recipe, unless the user chose otherwise
            config[key] = value
    if config["augment"] is None:
        config["augment"] = False
    validate(config, explicit_flags(argv) - OPERATIONAL)
    return config


# Per data set, the defaults that differ from the flags' own. Speech Commands: the recipe measured on real clips
# (the 130-speaker sample of Google's test set, dense FastGRNN hidden 100, 3 seeds): mean pooling, lr 3e-3,
# time-shift + noise augmentation: 83.2% test accuracy, against 37–46% with the plain defaults (datasets/README.md).
_SPEECH_COMMANDS_RECIPE = {"pooling": "mean", "lr": 3e-3, "augment": True}
DATASET_DEFAULTS = {name: _SPEECH_COMMANDS_RECIPE for name in ("google12", "google13", "google30", "google35")}


def read_config_file(parser: argparse.ArgumentParser, path: Path) -> dict:
    """The flags of a YAML ``--config`` file, each value converted and checked by its flag's own type.

    YAML 1.1 reads ``1e-2`` as a string and ``3e-3`` would not pass a float check: every value goes through
    the same conversion as on the command line. Raises :class:`UsageError` naming the file and the key.
    """
    if not path.is_file():
        raise UsageError(f"--config {path}: no such file")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        where = getattr(err, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        raise UsageError(f"--config {path}: not valid YAML{at}; write one 'flag_name: value' per line") from None
    if not isinstance(loaded, dict):
        raise UsageError(f"--config {path}: expected a mapping of flag names to values, e.g. 'weight_decay: 1e-3'")
    actions = {a.dest: a for a in parser._actions}
    config = {}
    for key, value in loaded.items():
        dest = str(key).replace("-", "_")
        if dest == "strrnn_version":  # a run's config.yaml reused as --config: the stamp is not a flag
            continue
        if dest not in actions or dest in ("help", "config"):
            raise UsageError(f"--config {path}: unknown key {key!r}{close_match(dest, actions)}; keys are the flag "
                             "names, e.g. 'weight_decay'")
        config[dest] = _config_value(actions[dest], value, f"--config {path}: {key}")
    return config


def _config_value(action: argparse.Action, value, where: str):
    """``value`` from a config file, converted like the command line converts ``--flag value``."""
    if value is None:
        return None
    if action.nargs == 0 or isinstance(action, argparse.BooleanOptionalAction):  # switches
        if not isinstance(value, bool):
            raise UsageError(f"{where}: expected true or false, got {value!r}")
        return value
    if action.type is None or isinstance(value, (list, tuple)):
        return value
    if isinstance(value, (dict, bool)):
        raise UsageError(f"{where}: expected a {action.type.__name__}, got {value!r}")
    try:
        return action.type(str(value))
    except (TypeError, ValueError):
        raise UsageError(f"{where}: expected a {action.type.__name__}, got {value!r}") from None


def _choice(config: dict, key: str, choices) -> None:
    if config[key] not in choices:
        raise UsageError(f"unknown --{key.replace('_', '-')} {config[key]!r}; choose one of: {', '.join(choices)}"
                         f"{close_match(str(config[key]), choices)}")


def validate(config: dict, given: set[str] | frozenset[str] = frozenset()) -> None:
    """Reject unknown names and contradictory flags with a message that says how to fix them; fill in the defaults
    that depend on ``--mode``. ``given``: the flags given on the command line (one the mode never reads is
    refused)."""
    # the registries themselves (they import torch and Lightning): HELP_NAMES only serves --help
    from .. import artifacts
    from ..cells import available_cells as cell_names
    from ..low_rank import FACTOR_KINDS
    from ..modes import check_mode_flags
    from ..task import OPTIMIZERS, SCHEDULERS
    from ..threshold import threshold_functions

    _choice(config, "dataset", artifacts.dataset_names())
    _choice(config, "cell", cell_names())
    _choice(config, "pooling", ("last", "mean"))
    if config["model"] is not None:
        _choice(config, "model", artifacts.model_names())
    _choice(config, "optimizer", OPTIMIZERS)
    _choice(config, "scheduler", SCHEDULERS)
    _number(config, ("lr", "weight_decay", "threshold_decay", "momentum", "label_smoothing"), low=0.0)
    _number(config, ("decay_warmup", "schedule_start", "freeze_at", "debias"), low=0.0, high=1.0)
    _number(config, ("strength",), low=0.0)
    # an unknown --mode names the closest one; flags the mode never reads are refused; the mode's defaults fill in
    check_mode_flags(config, given)
    for key, names in (("factors", FACTOR_KINDS), ("g", threshold_functions())):
        if config[key] is not None:
            _choice(config, key, names)
    if config["resume"] and config["overwrite"]:
        raise UsageError("--resume and --overwrite contradict each other; choose one")
    for key in ("epochs", "batch_size", "hidden_size", "num_layers"):
        if not isinstance(config[key], int) or config[key] < 1:
            raise UsageError(f"--{key.replace('_', '-')} must be a positive integer, got {config[key]!r}")
    _number(config, ("threshold_lr",), low=0.0, strict=True)
    _number(config, ("s_init",))
    limit = config["limit_batches"]
    # Lightning takes a fraction of the batches (<= 1) or a whole number of them, nothing in between
    if limit is not None and not (limit > 0 and (limit <= 1 or float(limit).is_integer())):
        raise UsageError(f"--limit-batches must be > 0: a fraction <= 1 or a whole number of batches, got {limit!r}")
    if config["hidden_size"] > MAX_HIDDEN:
        raise UsageError(f"--hidden-size {config['hidden_size']} is too large (at most {MAX_HIDDEN:,}: a hidden-size "
                         "H recurrent matrix has H*H weights)")
    if config["threads"] is not None and (not isinstance(config["threads"], int) or config["threads"] < 1):
        raise UsageError(f"--threads must be a positive integer, got {config['threads']!r}")
    for key in ("min_rank", "warmup_epochs", "num_workers", "seed"):
        if not isinstance(config[key], int) or config[key] < 0:
            raise UsageError(f"--{key.replace('_', '-')} must be an integer >= 0, got {config[key]!r}")
    if config["mode"] in ("lowrank", "lowrank-gmp") and config["min_rank"] < 1:
        # their freeze keeps every matrix at rank >= 1 (rank 0 would cut the recurrence altogether), so 0 would
        # silently act as 1
        raise UsageError(f"--min-rank {config['min_rank']}: --mode {config['mode']} keeps at least rank 1 in every "
                         "matrix; use --min-rank 1 or more (to cut more, raise --threshold-decay — --strength for "
                         "lowrank-gmp — or set --target-rank)")
    devices = str(config["devices"])
    if devices != "auto" and not (devices.lstrip("-").isdigit() and int(devices) in (-1,) or
                                  devices.isdigit() and int(devices) >= 1 or "," in devices):
        raise UsageError(f"--devices must be a positive number of devices, -1 or 'auto' (or a list like '0,1'), "
                         f"got {config['devices']!r}")
    _choice(config, "precision", PRECISIONS)
    loggers = config["logger"]  # a --config file may give one name, a list or nothing
    loggers = [loggers] if isinstance(loggers, str) else list(loggers or [])
    for name in loggers:
        _choice({"logger": name}, "logger", LOGGERS)
    config["logger"] = list(dict.fromkeys(["csv", *loggers]))  # the CSV log is always written (build_loggers)
    if config["out"] is None:
        config["out"] = f"runs/{config['dataset']}-{config['mode']}-seed{config['seed']}"
    if not str(config["out"]).strip():
        raise UsageError("--out is empty; give the run folder a name, e.g. --out runs/my-run")
    if config["data_dir"]:  # stored absolute so that evaluate/export work from any folder
        config["data_dir"] = str(Path(os.path.expanduser(str(config["data_dir"]))).resolve())


def _check_accelerator(accelerator) -> None:
    """A GPU asked for on a machine without one: say so before any work (Lightning raises a traceback later)."""
    import torch

    if str(accelerator).lower() in ("gpu", "cuda") and not torch.cuda.is_available():
        raise UsageError(f"--accelerator {accelerator}: no GPU is usable on this machine "
                         "(torch.cuda.is_available() is False); use --accelerator cpu")


MAX_HIDDEN = 65_536
PRECISIONS = ("32-true", "32", "64-true", "64", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "transformer-engine")


def _number(config: dict, keys, low: float | None = None, high: float | None = None, strict: bool = False) -> None:
    """Each of ``keys`` (when set) must be a finite number, >= ``low`` (> with ``strict``) and <= ``high``."""
    for key in keys:
        value = config[key]
        if value is None:
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise UsageError(f"{flag} must be a finite number, got {value!r}")
        if low is not None and (value < low or (strict and value == low)):
            raise UsageError(f"{flag} must be {'>' if strict else '>='} {low:g}, got {value!r}")
        if high is not None and value > high:
            raise UsageError(f"{flag} must be <= {high:g}, got {value!r}")


def open_run_folder(config: dict, explicit: set[str] = frozenset()) -> tuple[Path, Path | None]:
    """Check ``--out`` and, for ``--resume``, adopt the stored configuration; return the folder and the
    checkpoint to resume from (or None). Writes nothing: see :func:`strrnn.run_folder.check_out` for the rules.
    """
    out = Path(os.path.expanduser(str(config["out"])))
    if _is_ddp_child():  # the launching process checked and created the folder
        return out, (out / "last.ckpt" if config["resume"] and (out / "last.ckpt").exists() else None)
    try:
        out = run_folder.check_out(out, resume=config["resume"], overwrite=config["overwrite"])
    except run_folder.RunFolderError as err:
        raise UsageError(str(err)) from None
    if config["resume"] and (out / "config.yaml").exists():
        stored = yaml.safe_load((out / "config.yaml").read_text())
        check_resumable(stored, out)
        changed = sorted(k for k in stored if k not in OPERATIONAL and stored.get(k) != config.get(k)
                         and k in explicit)
        if changed:
            raise UsageError(f"--resume: flags {changed} differ from the stored config.yaml of {out}")
        for key, value in stored.items():
            if key not in OPERATIONAL and key not in _DROPPED:
                config[key] = value
    if config["resume"]:
        load_checkpoint_file(out / "last.ckpt")  # unreadable: say so now, before the logger resets metrics.csv
    return out, (out / "last.ckpt" if config["resume"] else None)


def check_resumable(stored: dict, out: Path) -> None:
    """Refuse, in one line that says what to do, to resume a run folder whose ``config.yaml`` (``stored``) an
    earlier version wrote with settings this version reads differently or does not know."""
    written_by = str(stored.get("strrnn_version") or "0.1")
    if _minor(written_by) < (0, 2):
        mode = stored.get("mode")
        if mode == "lowrank":
            raise UsageError(
                f"--resume: {out} was written by strrnn {written_by}, whose --mode lowrank was spectral GMP (driven "
                "thresholds); since 0.2 --mode lowrank learns its thresholds and spectral GMP is --mode lowrank-gmp. "
                "Finish that run with strrnn 0.1, or train it again with --overwrite (--mode lowrank-gmp --strength "
                f"{stored.get('strength', 0.6)} for the same method)")
    known = {action.dest for action in build_parser()._actions} | {"strrnn_version"} | _DROPPED
    unknown = sorted(set(stored) - known)
    if unknown:
        raise UsageError(f"--resume: {out} was written by strrnn {written_by} with settings this version does not "
                         f"know ({', '.join(unknown)}); resume it with that version, or train again with --overwrite")


# settings of earlier versions that no mode still running reads (0.1: spectral GMP's end, now --freeze-at)
_DROPPED = frozenset({"schedule_end"})


def _minor(version: str) -> tuple[int, int]:
    parts = (version.split(".") + ["0", "0"])[:2]
    try:
        return int(parts[0]), int(parts[1])
    except ValueError:
        return (0, 0)


def create_run_folder(config: dict, out: Path) -> None:
    """Create ``out`` (replacing the previous run there with ``--overwrite``) and write ``config.yaml``.

    Called once the data and the model are built, so that no mistake in the other flags costs the old run.
    """
    if _is_ddp_child():
        return
    try:
        run_folder.create(out, overwrite=config["overwrite"])
    except run_folder.RunFolderError as err:
        raise UsageError(str(err)) from None
    from .. import __version__

    # the version is stamped so that a later version can tell whether it reads these settings the same way
    atomic_write_text(out / "config.yaml", yaml.safe_dump({**config, "strrnn_version": __version__}, sort_keys=True))


def _is_ddp_child() -> bool:
    return int(os.environ.get("LOCAL_RANK", "0")) > 0 or int(os.environ.get("NODE_RANK", "0")) > 0


# ---------------------------------------------------------------------------------------------------------
# 2.-3. data, model, STR
# ---------------------------------------------------------------------------------------------------------
def build_run(config: dict):
    """Data module, model with STR applied, and the Lightning task for ``config``."""
    from .. import artifacts
    from ..modes import get_mode
    from ..task import ClassificationTask, OptimConfig

    datamodule = artifacts.build_datamodule(config)
    datamodule.setup("fit")
    datamodule.setup("test")
    for split in ("train", "val", "test"):
        dataset = getattr(datamodule, f"{split}_set", None)
        if dataset is not None and len(dataset) == 0:
            raise UsageError(f"the {split} split of --dataset {config['dataset']} is empty "
                             f"(data in {artifacts.default_data_dir(config)}); check the data folder and its split "
                             "lists")
    model = artifacts.build_model(config, datamodule)
    get_mode(config["mode"]).apply(model, config)
    optim = OptimConfig(
        optimizer=config["optimizer"], lr=config["lr"], momentum=config["momentum"],
        weight_decay=config["weight_decay"], threshold_decay=config["threshold_decay"],
        **({"threshold_lr": config["threshold_lr"]} if config["threshold_lr"] else {}),
        scheduler=config["scheduler"], warmup_epochs=config["warmup_epochs"], epochs=config["epochs"],
        label_smoothing=config["label_smoothing"],
    )
    return datamodule, model, ClassificationTask(model, optim)


def build_callbacks(config: dict, out: Path, model: torch.nn.Module) -> list[pl.Callback]:
    """What every run has (rank logging, NaN guard, per-epoch seeding, best/last checkpoints) plus the mode's."""
    import pytorch_lightning as pl

    from ..callbacks import EpochSeed, NonFiniteLossGuard, RankLogger
    from ..modes import get_mode

    return [
        RankLogger(out / "ranks.csv"),
        NonFiniteLossGuard(),
        EpochSeed(config["seed"]),
        # best.ckpt only among epochs whose budget is final (the mode's `selectable`)
        pl.callbacks.ModelCheckpoint(dirpath=out, filename="best", monitor="val_selection", mode="max",
                                     enable_version_counter=False, save_on_train_epoch_end=True),
        # last.ckpt after every training epoch (after validation), so a killed run resumes from its last epoch
        # boundary (Lightning's save_last writes it only when best.ckpt improves)
        pl.callbacks.ModelCheckpoint(dirpath=out, filename="last", monitor=None, save_top_k=1, every_n_epochs=1,
                                     enable_version_counter=False, save_on_train_epoch_end=True),
        *get_mode(config["mode"]).callbacks(config, model),
    ]


def set_threads(config: dict) -> None:
    """Compute with :func:`strrnn.cli.threads.choose_threads` threads and fit the data-loader workers beside them
    (a lowered ``--num-workers`` is logged)."""
    import torch

    from .threads import choose_threads, fit_workers

    threads = choose_threads(config["threads"], config["model"], config["hidden_size"], config["dataset"])
    if threads is not None:
        torch.set_num_threads(threads)
    accelerated = config["accelerator"] in ("gpu", "cuda", "mps", "tpu") or (
        config["accelerator"] == "auto" and torch.cuda.is_available())
    workers = fit_workers(config["num_workers"], threads, accelerated)
    if workers < config["num_workers"]:
        log.warning("--num-workers %d lowered to %d: %s compute thread(s) leave %d free core(s) (--threads)",
                    config["num_workers"], workers, threads or torch.get_num_threads(), workers)
        config["num_workers"] = workers


def build_loggers(config: dict, out: Path) -> list:
    """The CSV logger (``<out>/logs/metrics.csv``, which ``--resume`` and the run folder's ``metrics.csv`` read)
    first, so that it stays ``trainer.logger``; with ``--logger tensorboard`` also TensorBoard's event files in
    ``<out>/tensorboard``. Raises :class:`strrnn.optional.MissingExtraError` (a ``ValueError``) naming the extra
    when the ``tensorboard`` package is missing."""
    import pytorch_lightning as pl

    loggers = [pl.loggers.CSVLogger(save_dir=out, name="logs", version="")]
    if "tensorboard" in config["logger"]:
        require("tensorboard", extra="tensorboard", feature="--logger tensorboard")
        loggers.append(pl.loggers.TensorBoardLogger(save_dir=out, name="tensorboard", version="",
                                                    default_hp_metric=False))
    return loggers


# ---------------------------------------------------------------------------------------------------------
# 4.-5. train, test, write the run folder
# ---------------------------------------------------------------------------------------------------------
def run(config: dict, explicit: set[str] = frozenset()) -> dict:
    """Train, test and write the run folder for a validated ``config``; return the summary dict.

    ``explicit``: the keys given on the command line (a resumed run refuses changes to them). The run folder is
    locked for the whole run (:func:`lock_run_folder`); a start that fails before the first checkpoint leaves
    nothing behind (:meth:`strrnn.run_folder.RunLock.release`), so the same command can simply run again.
    """
    import pytorch_lightning as pl

    from ..callbacks import AtomicCheckpointIO, ResumableMetrics
    from ..modes import get_mode

    started = time.time()
    _check_accelerator(config["accelerator"])
    set_threads(config)
    held = lock_run_folder(config)
    created = False
    try:
        out, resume_from = open_run_folder(config, explicit)  # again under the lock: the folder may have changed
        loggers = build_loggers(config, out)  # a missing extra is reported before the data is built
        pl.seed_everything(config["seed"], workers=True, verbose=False)
        datamodule, model, task = build_run(config)
        check_precision(config, model)
        callbacks = build_callbacks(config, out, model)
        callbacks.append(ResumableMetrics(out / "logs" / "metrics.csv" if resume_from else None))
        task.selectable = get_mode(config["mode"]).selectable(config, task, callbacks)
        limit = config["limit_batches"]
        devices = config["devices"]
        trainer = _trainer(
            max_epochs=config["epochs"], accelerator=config["accelerator"],
            devices=int(devices) if str(devices).isdigit() else devices, num_nodes=config["num_nodes"],
            strategy=config["strategy"], precision=config["precision"], default_root_dir=out,
            logger=loggers,
            callbacks=callbacks, plugins=[AtomicCheckpointIO()],
            deterministic=False, log_every_n_steps=10, enable_model_summary=False,
            enable_progress_bar=config["progress_bar"],
            limit_train_batches=limit, limit_val_batches=limit, limit_test_batches=limit,
        )
        create_run_folder(config, out)  # once every flag proved usable: no mistake costs the old run
        created = True
        trainer.fit(task, datamodule=datamodule, ckpt_path=resume_from)
        best = out / "best.ckpt"
        test_metrics = trainer.test(task, datamodule=datamodule, ckpt_path=best if best.exists() else None,
                                    verbose=False)
        if not trainer.is_global_zero:
            return {}
        return write_outputs(config, out, task, datamodule, trainer, test_metrics, time.time() - started)
    except BaseException:
        if held is not None and not config["resume"] and (created or held.created):
            held.release(discard=True)
        raise
    finally:
        if held is not None:
            held.release()


def lock_run_folder(config: dict) -> run_folder.RunLock | None:
    """Check ``--out`` (:func:`strrnn.run_folder.check_out`: nothing is created for a refused folder) and lock it
    for this process, creating it when absent; None in a DDP child, whose launching process holds the lock.

    Raises:
        UsageError: ``--out`` is unusable, or another training holds the folder (naming its pid).
    """
    if _is_ddp_child():
        return None
    out = Path(os.path.expanduser(str(config["out"])))
    try:
        run_folder.check_out(out, resume=config["resume"], overwrite=config["overwrite"])
        return run_folder.lock(out)
    except run_folder.RunFolderError as err:
        # a folder in use: that is the news, whatever else would keep this run out of it
        raise UsageError(run_folder.in_use(out) if out.is_dir() and run_folder.in_use(out) else str(err)) from None


_MIXED_PRECISIONS = ("16-mixed", "bf16-mixed")


def _on_cpu(accelerator: str) -> bool:
    import torch

    return str(accelerator).lower() == "cpu" or (str(accelerator).lower() == "auto" and not torch.cuda.is_available())


def check_precision(config: dict, model: torch.nn.Module) -> None:
    """Refuse 16-bit mixed precision for a model whose recurrence cannot run under autocast, before any training.

    FastGRNN/FastRNN's hand-written kernels (:mod:`strrnn.fastgrnn_kernel`) accumulate into float32 buffers with
    in-place products, which autocast does not convert (on any device); on the CPU, torch's own LSTM/GRU
    (oneDNN) have no autocast kernel either. CNNs train under mixed precision on either device.
    """
    if config["precision"] not in _MIXED_PRECISIONS:
        return
    import torch

    from ..cells import RecurrentCell

    flag = f"--precision {config['precision']}"
    if any(getattr(m, "use_kernel", False) for m in model.modules()):
        raise UsageError(f"{flag}: --cell {config['cell']} runs FastGRNN/FastRNN's hand-written kernel "
                         "(strrnn/fastgrnn_kernel.py), which computes in float32 and cannot run under autocast; use "
                         "--precision 32-true")
    recurrent = any(isinstance(m, (RecurrentCell, torch.nn.RNNBase)) for m in model.modules())
    if recurrent and _on_cpu(config["accelerator"]):
        raise UsageError(f"{flag}: on the CPU, torch's recurrent layers (--cell {config['cell']}) have no 16-bit "
                         "autocast kernel; use --precision 32-true, or train on a GPU (--accelerator gpu)")


def _trainer(**kwargs):
    """``pl.Trainer(**kwargs)``, with Lightning's complaints about the hardware flags as a one-line error."""
    import pytorch_lightning as pl
    from lightning_fabric.utilities.exceptions import MisconfigurationException

    try:
        return pl.Trainer(**kwargs)
    except MisconfigurationException as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(f"{first} (check --accelerator, --devices, --strategy and --precision)") from None


def write_outputs(config, out: Path, task, datamodule, trainer, test_metrics, wall_time: float) -> dict:
    """report.csv/md, exported.pt, metrics.csv, summary.json (all written atomically)."""
    import pytorch_lightning as pl
    import torch

    from .. import artifacts
    from ..callbacks import NonFiniteLossError, RankRecipeCallback
    from ..reporting import model_size, report

    model = task.model.cpu()
    table = report(model)
    atomic_write_text(out / "report.csv", table.to_csv(index=False))
    small = artifacts.export_model(model)
    size = model_size(small)
    atomic_write_text(out / "report.md", (table.to_markdown(index=False) if _has_tabulate() else table.to_string())
                      + f"\n\nexported model: {artifacts.count_params(small):,} parameters, {size['fp32_kb']:.2f} "
                      f"KB at fp32, {size['int8_kb']:.2f} KB at int8 (strrnn.model_size)\n")
    broken = [name for name, tensor in small.state_dict().items()
              if tensor.is_floating_point() and not torch.isfinite(tensor).all()]
    if broken:
        raise NonFiniteLossError(f"the trained model holds non-finite values in {', '.join(broken[:4])}; nothing "
                                 "was exported. Lower --lr or the decay and train again.")
    flops = artifacts.flops_profile(small, datamodule)
    if flops is not None:
        atomic_write_text(out / "flops.csv", flops.to_csv(index=False))
    ranks = artifacts.learned_ranks(model)
    artifacts.save_exported(out / "exported.pt", small, config, ranks, datamodule)
    metrics_src = out / "logs" / "metrics.csv"
    if metrics_src.exists():
        shutil.copyfile(metrics_src, out / "metrics.csv")
    best_score = trainer.checkpoint_callback.best_model_score if trainer.checkpoint_callback else None
    summary = {
        "dataset": config["dataset"], "mode": config["mode"], "model": config["model"], "cell": config["cell"],
        "hidden_size": config["hidden_size"], "seed": config["seed"], "epochs": config["epochs"],
        "weight_decay": config["weight_decay"], "factors": config["factors"],
        "threshold_decay": config["threshold_decay"] if config["threshold_decay"] is not None
        else config["weight_decay"],
        # the knob of the run's budget: lowrank's strength (or its budget), unstructured's threshold decay
        "strength": _strength(config),
        "ranks": ranks,
        **_budget_report(trainer, RankRecipeCallback),
        "sparsity": float(table.iloc[-1]["sparsity"]) if not table.empty else 0.0,
        "params_str_dense": int(table.iloc[-1]["params_dense"]) if not table.empty else 0,
        "params_str": int(table.iloc[-1]["params"]) if not table.empty else 0,
        "params_dense": artifacts.count_params(artifacts.build_model(config, datamodule)),
        "params_exported": artifacts.count_params(small),
        # what the exported model stores (strrnn.model_size): fp32, and int8 as strrnn export --int8
        "size_fp32_kb": size["fp32_kb"], "size_int8_kb": size["int8_kb"],
        "macs_per_step_dense": int(table.iloc[-1]["macs_dense"]) if not table.empty else None,
        "macs_per_step": int(table.iloc[-1]["macs"]) if not table.empty else None,
        "flops_dense": int(flops.iloc[-1]["flops_dense"]) if flops is not None else None,
        "flops": int(flops.iloc[-1]["flops"]) if flops is not None else None,
        "best_val_acc": (float(best_score) + (2.0 if best_score < 0 else 0.0)) if best_score is not None else None,
        "test_acc": float(test_metrics[0]["test_acc"]) if test_metrics else None,
        "wall_time_s": round(wall_time, 1),
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "lightning": pl.__version__},
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    return summary


def _budget_report(trainer, callback_type) -> dict:
    """A low-rank recipe's budget (``--target-rank`` / ``--target-params``) as parameters, and whether STR's own
    learned ranks met it (``budget_met_by_str``; False: the ranks were cut to it by magnitude at the freeze)."""
    recipe = next((c.recipe for c in trainer.callbacks if isinstance(c, callback_type)), None)
    if recipe is None or not recipe.budgeted:
        return {}
    return {"budget_params": recipe.target(), "budget_met_by_str": getattr(recipe, "budget_met_by_str", None)}


def _strength(config: dict):
    if config["mode"] in ("lowrank", "lowrank-paper", "lowrank-gmp"):
        if config.get("target_rank") is not None:
            return "ranks " + ",".join(map(str, config["target_rank"]))
        if config.get("target_params") is not None:
            return f"{config['target_params']} params"
        return config["strength"] if config["mode"] == "lowrank-gmp" else config["threshold_decay"]
    if config["mode"] == "unstructured":
        return config["threshold_decay"] if config["threshold_decay"] is not None else config["weight_decay"]
    return None


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


def print_summary(summary: dict) -> None:
    """Print the learned ranks / sparsity and the accuracy of a finished run."""
    if not summary:
        return
    if summary["ranks"]:
        print("\nlearned ranks:" if summary["mode"] in ("lowrank", "lowrank-paper") else "\nranks:")
        for key, value in summary["ranks"].items():
            print(f"  {key}: {value}")
    if summary["params_str_dense"]:
        print(f"parameters of STR tensors after export: {summary['params_str']:,} of {summary['params_str_dense']:,}"
              f" ({summary['sparsity']:.1f}% removed)")
    if summary.get("flops") is not None:
        print(f"FLOPs (nonzero weights): {summary['flops']:,} of {summary['flops_dense']:,} dense")
    print(f"model parameters stored after export: {summary['params_exported']:,} (dense: {summary['params_dense']:,})")
    print(f"exported model size: {summary['size_fp32_kb']:.2f} KB at fp32, {summary['size_int8_kb']:.2f} KB at int8 "
          "(strrnn export --int8)")
    best, test = summary.get("best_val_acc"), summary.get("test_acc")
    print(f"best validation accuracy: {'n/a' if best is None else f'{best:.4f}'}   "
          f"test accuracy: {'n/a' if test is None else f'{test:.4f}'}")


_BENIGN_WARNINGS = (
    r"Checkpoint directory .* exists and is not empty",  # config.yaml and ranks.csv are written first
    r"Experiment logs directory .* exists and is not empty",  # --resume: ResumableMetrics keeps the old rows
    r".*isinstance\(treespec, LeafSpec\)",                # Lightning vs torch version notice
    r"The number of training batches .* is smaller than the logging interval",
    r".*does not have many workers which may be a bottleneck",  # features are in memory; workers do not help
)


def _not_an_advert(record: logging.LogRecord) -> bool:
    # Lightning advertises a cloud logger on every run; it says nothing about this run
    return "litlogger" not in str(record.msg)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m strrnn.train``; returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    lightning_log = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    if _not_an_advert not in lightning_log.filters:
        lightning_log.addFilter(_not_an_advert)
    for pattern in _BENIGN_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    argv = sys.argv[1:] if argv is None else argv
    try:
        config = parse_config(argv)  # --help and unknown flags exit here, before Lightning is imported
    except ValueError as err:  # UsageError is one
        return _usage_error(err)
    from ..callbacks import NonFiniteLossError
    from ..data import DataError

    try:
        summary = run(config, explicit_flags(argv))
    except (UsageError, DataError, DiskFullError, ValueError) as err:
        return _usage_error(err)
    except NonFiniteLossError as err:
        print(f"python -m strrnn.train: {err}", file=sys.stderr)
        return 1
    print_summary(summary)
    if summary:
        print(f"run folder: {config['out']}")
    return 0


def _usage_error(err: Exception) -> int:
    print(f"python -m strrnn.train: error: {err}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
