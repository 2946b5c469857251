"""Training modes: one registry entry per ``--mode``, each defined once.

A :class:`Mode` says what the mode validates, how it is applied to a freshly built model, which Lightning callbacks
it needs, when an epoch may become ``best.ckpt``, and how an exported model of the mode is rebuilt for loading.
The CLI's ``--mode`` choices are the registry's names; adding a mode is one :func:`register_mode` call.

    dense         the model as built
    lowrank       LowRankSTR on every recurrent W and U: STR learns the ranks, then fine-tunes at them
    lowrank-paper the STR paper's low-rank recipe as published
    lowrank-gmp   spectral GMP, the baseline: the same thresholds driven along a schedule, not learned
    fixed-rank    vanilla factorization at --rank-w/--rank-u, or at the ranks an STR run learned (--budget-from)
    unstructured  UnstructuredSTR on every conv/linear weight: STR learns each layer's sparsity
    gmp, dnw, magnitude   the CNN pruning baselines of package ``cnn`` at --sparsity or an STR run's budget
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from torch import nn

from .low_rank import LowRankSTR, lowrank, lowrank_rnn, originals
from .reporting import iter_str_tensors
from .unstructured_str import sparsify
from .usage import UsageError, close_match

# The callbacks, the training task and package cnn import Lightning and torchvision (seconds): the functions
# below import them when a mode is applied, so that the registry itself (--help, the names) stays light.

__all__ = ["Mode", "UsageError", "MODES", "register_mode", "get_mode", "mode_names", "MODE_FLAGS", "STR_KNOBS",
           "close_match", "learned_rank_targets", "budget_ranks"]


def _nothing(*_args) -> None:
    return None


def _no_callbacks(config: dict, model: nn.Module) -> list:
    return []


@dataclass(frozen=True)
class Mode:
    """One training mode.

    Attributes:
        name: the ``--mode`` value.
        summary: one line for ``--help``.
        apply: ``(model, config) -> None``: parametrize a freshly built model (before the optimizer exists).
        flags: the mode-specific flags (:data:`MODE_FLAGS`) this mode accepts.
        validate: ``(config) -> None``: raise :class:`UsageError` for a configuration the mode cannot run.
        callbacks: ``(config, model) -> [Callback]``: the Lightning callbacks the mode needs.
        selectable: ``(config, task, callbacks) -> (() -> bool) | None``: when an epoch may become
            ``best.ckpt`` (None: any epoch) — only once the budget the mode learns or schedules is final.
        reload: ``(model, config, ranks) -> None``: parametrize a fresh model so that an exported state dict
            of this mode loads into it (default: :attr:`apply`).
        ignores: general flags (config keys) this mode never reads, e.g. the STR knobs for ``dense``; two runs
            that differ only in them trained the same model (the benchmark runner reuses such runs). Given on the
            command line, such a flag is refused: it would have no effect.
        defaults: ``(config) -> {key: value}``: the mode's own defaults of flags whose default depends on the mode
            (those left unset, ``None``); e.g. ``--factors`` or ``--threshold-decay``.
    """

    name: str
    summary: str
    apply: Callable[[nn.Module, dict], None]
    flags: frozenset[str] = frozenset()
    validate: Callable[[dict], None] = _nothing
    callbacks: Callable[[dict, nn.Module], list] = _no_callbacks
    selectable: Callable[..., Callable[[], bool] | None] = _nothing
    reload: Callable[[nn.Module, dict, dict], None] | None = None
    ignores: frozenset[str] = frozenset()
    defaults: Callable[[dict], dict] = lambda config: {}

    @property
    def unread(self) -> frozenset[str]:
        """Config keys this mode never reads: :attr:`ignores` and the mode flags (:data:`MODE_FLAGS`) it does
        not accept. Runs that differ only in them computed the same thing."""
        return self.ignores | (frozenset(MODE_FLAGS) - self.flags)


MODES: dict[str, Mode] = {}

# flags that only some modes accept (every other flag applies to every mode)
MODE_FLAGS = ("rank_w", "rank_u", "budget_from", "sparsity", "target_rank", "target_params")
# the threshold's knobs: read by the STR modes only (each mode says which of them it ignores)
STR_KNOBS = frozenset({"g", "s_init", "min_rank", "strength", "schedule_start", "freeze_at", "rewarm", "relative",
                       "threshold_decay", "threshold_lr", "decay_warmup", "debias"})


def register_mode(mode: Mode) -> Mode:
    """Add ``mode`` to the registry (replacing one of the same name); return it."""
    unknown = set(mode.flags) - set(MODE_FLAGS)
    if unknown:
        raise ValueError(f"mode {mode.name!r} accepts unknown mode flags {sorted(unknown)}; known: {MODE_FLAGS}")
    MODES[mode.name] = mode
    return mode


def mode_names() -> list[str]:
    """Registered mode names, in registration order."""
    return list(MODES)


def get_mode(name: str) -> Mode:
    """The registered mode ``name``.

    Raises:
        UsageError: unknown name; the message lists the modes and suggests the closest one.
    """
    if name not in MODES:
        raise UsageError(f"unknown --mode {name!r}; choose one of: {', '.join(MODES)}{close_match(name, MODES)}")
    return MODES[name]


def check_mode_flags(config: dict, given: set[str] | frozenset[str] = frozenset()) -> None:
    """Refuse mode-specific flags given to a mode that does not accept them and, among the flags ``given`` on the
    command line, those the mode never reads (they would have no effect); fill in the mode's defaults; then run the
    mode's own checks."""
    mode = get_mode(config["mode"])
    for flag in MODE_FLAGS:
        if config.get(flag) is not None and flag not in mode.flags:
            takers = [m.name for m in MODES.values() if flag in m.flags]
            raise UsageError(f"--{flag.replace('_', '-')} only applies to --mode {' or '.join(takers)} "
                             f"(got --mode {mode.name})")
    for key in sorted(set(given) & mode.ignores):
        readers = [m.name for m in MODES.values() if key not in m.ignores]
        raise UsageError(f"{_flag(key)} has no effect with --mode {mode.name}; it acts with --mode "
                         f"{' or '.join(readers)}{_KNOB_HINTS.get((mode.name, key), '')}")
    for key, value in mode.defaults(config).items():
        if config.get(key) is None:
            config[key] = value
    mode.validate(config)


# what to use instead, for a knob refused by a mode that has another
_KNOB_HINTS = {
    ("lowrank", "strength"): " (spectral GMP's knob); --mode lowrank's knob is --threshold-decay, the decay that "
                             "raises the learned thresholds (or --target-rank / --target-params)",
    ("lowrank", "schedule_start"): " (spectral GMP drives its thresholds along a schedule; STR learns them)",
    ("lowrank-paper", "freeze_at"): " (the paper's recipe has no fine-tuning phase: the thresholds learn to the end)",
    ("lowrank-paper", "rewarm"): " (the paper's recipe has no fine-tuning phase to restart the learning rate for)",
    ("lowrank-paper", "debias"): " (the paper's recipe never freezes its ranks, so nothing is debiased)",
    ("lowrank-gmp", "threshold_decay"): " (learned STR's knob); spectral GMP drives its thresholds: its knob is "
                                        "--strength (or --target-rank / --target-params)",
    ("lowrank-gmp", "g"): " (spectral GMP sets each threshold directly, it learns no s)",
    ("lowrank-gmp", "s_init"): " (spectral GMP sets each threshold directly, it learns no s)",
    ("lowrank-gmp", "decay_warmup"): " (spectral GMP learns no threshold, so there is no decay to warm up)",
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


# --- dense ----------------------------------------------------------------------------------------------------
register_mode(Mode("dense", "the model as built", apply=_nothing, ignores=STR_KNOBS | {"factors"}))


# --- lowrank: learned STR, and lowrank-gmp: the driven baseline ----------------------------------------------
# --mode lowrank's defaults, chosen in the parity study (research/rank_parity) and on FSDD through the CLI: the decay
# λ on s that leaves about half of FSDD's W,U parameters, the decay warm-up, and the debias phase after the freeze
# (3 seeds at λ 3, ~20% of W,U: 87.0 with 0.2 against 82.9 without; at λ 1, ~50%: 94.3 against 94.7).
STR_DECAY = 1.0
STR_DECAY_WARMUP = 0.15
STR_DEBIAS = 0.2


def _lowrank_defaults(config: dict) -> dict:
    return {"factors": "orthogonal", "relative": True, "g": "exp", "threshold_decay": STR_DECAY,
            "decay_warmup": STR_DECAY_WARMUP, "freeze_at": 0.4, "debias": STR_DEBIAS}


def _paper_defaults(config: dict) -> dict:
    # the paper as published: free factors, absolute e^s, the decay λ on m and s (its λ: the weights' 1e-3)
    return {"factors": "free", "relative": False, "g": "exp", "threshold_decay": config["weight_decay"],
            "decay_warmup": 0.0}


def _apply_lowrank(model: nn.Module, config: dict) -> None:
    lowrank_rnn(model, factors=config["factors"], g=config["g"], s_init=config["s_init"],
                min_rank=config["min_rank"], relative=config["relative"])


def _validate_budget(config: dict) -> None:
    if config.get("target_rank") is not None and config.get("target_params") is not None:
        raise UsageError("give either --target-rank or --target-params, not both")
    if config.get("target_rank") is not None:
        config["target_rank"] = parse_pair(config["target_rank"], "--target-rank")
    if config.get("target_params") is not None and config["target_params"] < 1:
        raise UsageError(f"--target-params must be a positive number of parameters, got {config['target_params']}")


def _validate_lowrank(config: dict) -> None:
    _validate_budget(config)
    if not 0 < config["freeze_at"] <= 1:
        raise UsageError(f"--freeze-at is a fraction of training in (0, 1], got {config['freeze_at']}")
    if config["freeze_at"] + config["debias"] > 1:
        raise UsageError(f"--freeze-at {config['freeze_at']} + --debias {config['debias']} exceed the training: the "
                         "shrinkage must have faded before the end")


def _budget_options(config: dict, model: nn.Module) -> dict:
    if config.get("target_rank") is not None:
        return {"target_ranks": learned_rank_targets(model, *config["target_rank"])}
    if config.get("target_params") is not None:
        return {"target_params": config["target_params"]}
    return {}


def _lowrank_callbacks(config: dict, model: nn.Module) -> list:
    from .callbacks import RankRecipeCallback
    from .str_recipe import STRRecipe

    if config["mode"] == "lowrank-paper":  # no freeze, no fine-tuning phase: the thresholds learn to the end
        return [RankRecipeCallback(STRRecipe, freeze_at=None, decay_warmup=config["decay_warmup"], rewarm=False)]
    return [RankRecipeCallback(STRRecipe, freeze_at=config["freeze_at"], decay_warmup=config["decay_warmup"],
                               debias=config["debias"], rewarm=config["rewarm"], **_budget_options(config, model))]


def _lowrank_selectable(config: dict, task, callbacks):
    from .task import ranks_frozen

    if config["mode"] == "lowrank-paper":  # the thresholds learn to the end: the final model carries the budget
        return _last_epoch(config, task, callbacks)
    return lambda: ranks_frozen(task.model)  # best.ckpt only at the final ranks


def _reload_low_rank(model: nn.Module, config: dict, ranks: dict) -> None:
    """A fresh STR model frozen at the exported ranks, so that export gives factors of the stored shapes."""
    get_mode(config["mode"]).apply(model, config)
    for key, rank in ranks.items():
        module_path, _, name = key.rpartition(".")
        module = model.get_submodule(module_path)
        p = next(q for q in module.parametrizations[name] if isinstance(q, LowRankSTR))
        if p.threshold is not None:
            with torch.no_grad():
                # distinct magnitudes, so that freezing keeps exactly `rank` entries
                originals(module, name)[1].copy_(torch.linspace(1.0, 0.5, p.max_rank))
            p.freeze_rank(rank)


register_mode(Mode(
    "lowrank", "LowRankSTR on every recurrent W and U: STR learns the ranks (thresholds trained by the loss, "
    "raised by --threshold-decay), then fine-tunes at them", apply=_apply_lowrank,
    flags=frozenset({"target_rank", "target_params"}), validate=_validate_lowrank, callbacks=_lowrank_callbacks,
    selectable=_lowrank_selectable, reload=_reload_low_rank, ignores=frozenset({"strength", "schedule_start"}),
    defaults=_lowrank_defaults,
))
register_mode(Mode(
    "lowrank-paper", "the STR paper's low-rank recipe as published: free factors, absolute e^s, --threshold-decay "
    "on m and s, no fine-tuning phase", apply=_apply_lowrank, callbacks=_lowrank_callbacks,
    selectable=_lowrank_selectable, reload=_reload_low_rank,
    ignores=frozenset({"strength", "schedule_start", "freeze_at", "rewarm", "debias"}), defaults=_paper_defaults,
))


def _apply_lowrank_gmp(model: nn.Module, config: dict) -> None:
    lowrank_rnn(model, factors=config["factors"], min_rank=config["min_rank"])


def _validate_lowrank_gmp(config: dict) -> None:
    _validate_budget(config)
    if config.get("factors") != "orthogonal":
        raise UsageError("--mode lowrank-gmp prunes singular values, which needs --factors orthogonal (with free "
                         "factors the spectrum says nothing about a direction's size)")
    if not 0 <= config["strength"] < 1:
        raise UsageError(f"--strength is a fraction of the largest singular value in [0, 1), got {config['strength']}")
    if not 0 <= config["schedule_start"] < config["freeze_at"] <= 1:
        raise UsageError(f"need 0 <= --schedule-start < --freeze-at <= 1, got {config['schedule_start']} and "
                         f"{config['freeze_at']}")


def _lowrank_gmp_callbacks(config: dict, model: nn.Module) -> list:
    from .callbacks import RankRecipeCallback
    from .spectral_gmp import SpectralGMP

    options = _budget_options(config, model) or {"strength": config["strength"]}
    return [RankRecipeCallback(SpectralGMP, start=config["schedule_start"], end=config["freeze_at"],
                               rewarm=config["rewarm"], **options)]


register_mode(Mode(
    "lowrank-gmp", "spectral GMP, the baseline: LowRankSTR's thresholds driven (not learned) along GMP's cubic "
    "schedule to --strength x each matrix's largest singular value, then frozen", apply=_apply_lowrank_gmp,
    flags=frozenset({"target_rank", "target_params"}), validate=_validate_lowrank_gmp,
    callbacks=_lowrank_gmp_callbacks, selectable=_lowrank_selectable, reload=_reload_low_rank,
    ignores=frozenset({"g", "s_init", "threshold_decay", "decay_warmup", "relative", "debias"}),
    defaults=lambda config: {"factors": "orthogonal", "strength": 0.6, "schedule_start": 0.05, "freeze_at": 0.4},
))


# --- fixed-rank -----------------------------------------------------------------------------------------------
# what must agree between an STR run and a fixed-rank run trained at its ranks: the same tensor names can mean
# different shapes (an LSTM's W is 4H x in, a FastGRNN's H x in), so a mismatch would train the wrong budget
_ARCHITECTURE_KEYS = ("model", "cell", "hidden_size", "num_layers", "features")


def budget_ranks(run_dir: str | os.PathLike, config: dict | None = None) -> dict[str, int]:
    """The ranks an STR run folder learned, ``{"rnn.cells.0.W": r_W, ...}``, checked against ``config``'s model.

    Raises:
        UsageError: not a finished run folder, a run that learned no ranks, or a different architecture.
    """
    path = Path(run_dir)
    summary = path / "summary.json"
    if not summary.is_file():
        raise UsageError(f"--budget-from {path}: no summary.json there (is it a finished strrnn.train run folder?)")
    ranks = json.loads(summary.read_text()).get("ranks") or {}
    if not ranks:
        raise UsageError(f"--budget-from {path}: that run learned no ranks (was it --mode lowrank?)")
    source_config = path / "config.yaml"
    if config is not None and source_config.is_file():
        source = yaml.safe_load(source_config.read_text()) or {}
        # an unset --model means the data set's default model: comparable only when both runs name one
        differ = [f"{_flag(k)} {config.get(k)} here, {source[k]} there"
                  for k in _ARCHITECTURE_KEYS if k in source and source[k] != config.get(k)
                  and not (k == "model" and None in (source[k], config.get(k)))]
        if differ:
            raise UsageError(f"--budget-from {path}: that run trained a different model ({'; '.join(differ)}); "
                             "pass the same model flags as the STR run")
    return {k: int(v) for k, v in ranks.items()}


def _fixed_at(model: nn.Module, config: dict, ranks: dict[str, int]) -> None:
    for key, rank in ranks.items():
        path, _, name = key.rpartition(".")
        try:
            module = model.get_submodule(path)
        except AttributeError:
            raise UsageError(f"--budget-from: tensor {key} does not exist in this model") from None
        lowrank(module, name, max_rank=rank, threshold=False, factors=config["factors"])


def _apply_fixed_rank(model: nn.Module, config: dict) -> None:
    if config.get("budget_from"):
        _fixed_at(model, config, budget_ranks(config["budget_from"], config))
    else:  # an unspecified rank means full rank for that weight (of every layer)
        max_rank = {"W": config.get("rank_w"), "U": config.get("rank_u")}
        lowrank_rnn(model, max_rank=max_rank, threshold=False, factors=config["factors"])


def _validate_fixed_rank(config: dict) -> None:
    explicit = config.get("rank_w") is not None or config.get("rank_u") is not None
    if config.get("budget_from") is None and not explicit:
        raise UsageError("--mode fixed-rank needs --rank-w/--rank-u or --budget-from RUN_DIR")
    if config.get("budget_from") is not None and explicit:
        raise UsageError("give either --budget-from or --rank-w/--rank-u, not both")
    for key in ("rank_w", "rank_u"):
        if config.get(key) is not None and config[key] < 1:
            raise UsageError(f"{_flag(key)} must be a positive rank, got {config[key]}")


def _reload_fixed_rank(model: nn.Module, config: dict, ranks: dict) -> None:
    if config.get("budget_from"):  # the STR run may be gone: the ranks were stored with the export
        _fixed_at(model, config, ranks)
    else:
        _apply_fixed_rank(model, config)


register_mode(Mode(
    "fixed-rank", "vanilla factorization at --rank-w/--rank-u or at the ranks of --budget-from RUN",
    apply=_apply_fixed_rank, flags=frozenset({"rank_w", "rank_u", "budget_from"}), validate=_validate_fixed_rank,
    reload=_reload_fixed_rank, ignores=STR_KNOBS, defaults=lambda config: {"factors": "free"},
))


# --- unstructured ---------------------------------------------------------------------------------------------
def _apply_unstructured(model: nn.Module, config: dict) -> None:
    sparsify(model, g=config["g"], s_init=config["s_init"])


def _unstructured_callbacks(config: dict, model: nn.Module) -> list:
    from .callbacks import ThresholdDecayWarmup

    return [ThresholdDecayWarmup(config["decay_warmup"] * config["epochs"])] if config["decay_warmup"] > 0 else []


def _last_epoch(config: dict, task, callbacks):
    # thresholds move until the end: the final model carries the learned budget
    return lambda: task.trainer.current_epoch == task.trainer.max_epochs - 1


register_mode(Mode(
    "unstructured", "UnstructuredSTR on every conv/linear weight: STR learns each layer's sparsity",
    apply=_apply_unstructured, callbacks=_unstructured_callbacks, selectable=_last_epoch,
    ignores=frozenset({"factors", "min_rank", "strength", "schedule_start", "freeze_at", "rewarm", "relative",
                       "debias"}),
    defaults=lambda config: {"g": "sigmoid", "decay_warmup": 0.15},
))


# --- CNN pruning baselines (package cnn) ----------------------------------------------------------------------
def pruning_targets(model: nn.Module, config: dict) -> dict[str, float]:
    """Per-layer sparsity targets of a pruning baseline: ``--sparsity`` spread uniformly or by ERK, or the
    budget an unstructured STR run learned (``--budget-from``)."""
    from cnn.budget import budget_targets

    return budget_targets(model, budget_from=config.get("budget_from"), sparsity=config.get("sparsity"),
                          distribution=config.get("budget_distribution", "uniform"))


def _validate_pruning(config: dict) -> None:
    if (config.get("sparsity") is None) == (config.get("budget_from") is None):
        raise UsageError(f"--mode {config['mode']} needs exactly one of --sparsity F or --budget-from RUN_DIR")
    if config.get("sparsity") is not None and not 0 <= config["sparsity"] < 1:
        raise UsageError(f"--sparsity is a fraction in [0, 1), got {config['sparsity']}")
    if config.get("budget_distribution", "uniform") not in ("uniform", "erk"):
        raise UsageError(f"unknown --budget-distribution {config['budget_distribution']!r}; choose one of: "
                         "uniform, erk")


def _gmp_callbacks(config: dict, model: nn.Module) -> list:
    from cnn.pruning import GMPCallback

    # the Lightning module holds the model as `model`: its paths carry that prefix
    return [GMPCallback({f"model.{k}": v for k, v in pruning_targets(model, config).items()})]


def _gmp_selectable(config: dict, task, callbacks):
    from cnn.pruning import GMPCallback

    gmp = next(c for c in callbacks if isinstance(c, GMPCallback))
    return lambda: gmp.scheduler is not None and task.trainer.global_step >= gmp.scheduler.end_step


_PRUNING = frozenset({"sparsity", "budget_from"})
register_mode(Mode(
    "gmp", "gradual magnitude pruning (cubic schedule) to --sparsity or an STR run's budget",
    apply=_nothing,  # masks are registered by GMPCallback, which also schedules them
    flags=_PRUNING, validate=_validate_pruning, callbacks=_gmp_callbacks, selectable=_gmp_selectable,
    reload=_nothing,  # exported: masks folded into plain weights
    ignores=STR_KNOBS | {"factors"},
))
def _apply_dnw(model: nn.Module, config: dict) -> None:
    from cnn.pruning import apply_dnw

    apply_dnw(model, pruning_targets(model, config))


def _apply_magnitude(model: nn.Module, config: dict) -> None:
    from cnn.pruning import apply_magnitude_pruning

    apply_magnitude_pruning(model, pruning_targets(model, config))


register_mode(Mode(
    "dnw", "discovering neural wirings: top-k weights forward, dense gradients", apply=_apply_dnw,
    flags=_PRUNING, validate=_validate_pruning, reload=_nothing, ignores=STR_KNOBS | {"factors"},
))
register_mode(Mode(
    "magnitude", "one-shot magnitude pruning at initialization", apply=_apply_magnitude,
    flags=_PRUNING, validate=_validate_pruning, reload=_nothing, ignores=STR_KNOBS | {"factors"},
))


# --- shared helpers -------------------------------------------------------------------------------------------
def parse_pair(value, flag: str) -> list[int]:
    """``"W,U"`` (or a two-item list) as two positive integers. Raises :class:`UsageError`."""
    parts = list(value) if isinstance(value, (list, tuple)) else str(value).split(",")
    try:
        pair = [int(x) for x in parts]
    except ValueError:
        raise UsageError(f"{flag} takes two integers 'W,U', got {value!r}") from None
    if len(pair) != 2 or min(pair) < 1:
        raise UsageError(f"{flag} takes two positive integers 'W,U', got {value!r}")
    return pair


def learned_rank_targets(model: nn.Module, rank_w: int, rank_u: int) -> dict[str, int]:
    """``--target-rank W,U`` as ``{"<path>.W": rank_w, "<path>.U": rank_u}`` over every recurrent cell."""
    targets = {}
    for path, _module, name, p in iter_str_tensors(model):
        if isinstance(p, LowRankSTR) and name in ("W", "U"):
            targets[f"{path}.{name}"] = rank_w if name == "W" else rank_u
    return targets
