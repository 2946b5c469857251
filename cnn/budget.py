"""Per-layer sparsity budgets: uniform, ERK, and the budget an STR run learned (its ``report.csv``).

A budget is a ``dict[str, float]`` mapping a module path (as in ``model.named_modules()``) to the
*fraction* of that module's ``weight`` entries to remove, in ``[0, 1]`` — e.g. ``{"conv1": 0.52,
"fc": 0.9}``. (``strrnn.report`` and ``report.csv`` give sparsity in percent; :func:`load_budget`
converts.) Budgets feed ``cnn.pruning.GMPScheduler`` / ``GMPCallback`` / ``apply_dnw`` /
``apply_magnitude_pruning``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd
from torch import nn

from strrnn.selection import WEIGHT_LAYERS, select_weights

__all__ = [
    "DISTRIBUTIONS",
    "budget_targets",
    "erk_budget",
    "global_sparsity",
    "load_budget",
    "prunable_layers",
    "resolve_budget",
    "uniform_budget",
]

PRUNABLE = WEIGHT_LAYERS


def prunable_layers(
    model: nn.Module, include: Iterable[str] | None = None, exclude: Iterable[str] | None = None
) -> dict[str, nn.Module]:
    """Conv/Linear modules of ``model`` by path, in definition order (:func:`strrnn.selection.select_weights`).

    ``include`` (paths, path prefixes or fnmatch patterns) keeps only those; ``exclude`` drops those — e.g.
    ``exclude=["conv1", "fc"]`` keeps ResNet's first conv and classifier dense.
    """
    include = list(include) if include else None
    return {path: module for path, module, _ in select_weights(model, include, exclude, recurrent=False)}


def _check_fraction(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(
            f"sparsity of {name!r} must be a fraction in [0, 1], got {value!r}"
            + (" (looks like a percentage: divide by 100)" if 1.0 < value <= 100.0 else "")
        )
    return value


def uniform_budget(
    model: nn.Module,
    sparsity: float,
    include: Iterable[str] | None = None,
    exclude: Iterable[str] | None = None,
) -> dict[str, float]:
    """The same sparsity fraction for every selected Conv/Linear layer: ``{path: sparsity}``."""
    sparsity = _check_fraction("uniform budget", sparsity)
    return {name: sparsity for name in prunable_layers(model, include, exclude)}


def erk_budget(
    model: nn.Module,
    sparsity: float,
    include: Iterable[str] | None = None,
    exclude: Iterable[str] | None = None,
) -> dict[str, float]:
    """Erdős–Rényi-Kernel budget (Evci et al. 2020, RigL): overall ``sparsity`` over the selected layers.

    A layer with weight shape ``(out, in, kh, kw)`` gets density ``ε·(out + in + kh + kw) / (out·in·kh·kw)``
    (``(out + in) / (out·in)`` for a linear layer), capped at 1; ``ε`` is solved so that the selected
    layers keep ``(1 − sparsity)`` of their weights in total. Layers that would exceed density 1 stay
    dense and ``ε`` is re-solved over the rest (RigL's procedure).
    """
    sparsity = _check_fraction("ERK budget", sparsity)
    layers = prunable_layers(model, include, exclude)
    if not layers:
        raise ValueError("no Conv/Linear layer selected for the ERK budget")
    sizes = {name: module.weight.numel() for name, module in layers.items()}
    scores = {name: sum(module.weight.shape) / module.weight.numel() for name, module in layers.items()}
    kept_total = (1.0 - sparsity) * sum(sizes.values())
    dense: set[str] = set()
    while True:
        free = [name for name in layers if name not in dense]
        budget_left = kept_total - sum(sizes[name] for name in dense)
        if not free:
            break
        epsilon = budget_left / sum(scores[name] * sizes[name] for name in free)
        too_dense = [name for name in free if epsilon * scores[name] > 1.0]
        if not too_dense:
            break
        dense.update(too_dense)
    densities = {name: 1.0 if name in dense else epsilon * scores[name] for name in layers}
    return {name: max(0.0, 1.0 - density) for name, density in densities.items()}


def global_sparsity(model: nn.Module, budget: Mapping[str, float]) -> float:
    """Fraction of the weights of the layers in ``budget`` that the budget removes (size-weighted)."""
    layers = dict(model.named_modules())
    total = sum(layers[name].weight.numel() for name in budget)
    return sum(budget[name] * layers[name].weight.numel() for name in budget) / max(total, 1)


def load_budget(source: str | Path | pd.DataFrame) -> dict[str, float]:
    """Per-layer sparsity fractions from an STR run: a run folder with report.csv, the csv, a DataFrame.

    Reads the ``module``, ``tensor`` and ``sparsity`` (percent) columns of ``strrnn.report``'s table;
    rows for the ``total`` and for non-unstructured tensors (column ``mode``, when present) are skipped.
    Returns ``{module path: sparsity fraction}`` for the tensors named ``weight``.
    """
    if isinstance(source, pd.DataFrame):
        table, origin = source, "the given table"
    else:
        path = Path(source)
        if path.is_dir():
            path = path / "report.csv"
        if not path.is_file():
            raise FileNotFoundError(
                f"no STR report at {path} (expected a run folder with report.csv, or the csv)"
            )
        table, origin = pd.read_csv(path), str(path)
    missing = {"module", "tensor", "sparsity"} - set(table.columns)
    if missing:
        raise ValueError(f"{origin} lacks column(s) {sorted(missing)}; columns are {list(table.columns)}")
    rows = table[table["module"].astype(str) != "total"]
    if "mode" in rows.columns:
        rows = rows[rows["mode"].astype(str) == "unstructured"]
    rows = rows.dropna(subset=["sparsity"])
    other = rows[rows["tensor"].astype(str) != "weight"]
    if len(other):
        raise ValueError(
            f"{origin}: CNN budgets prune 'weight' tensors only, got "
            f"{sorted(set(other['module'] + '.' + other['tensor']))}"
        )
    if rows.empty:
        raise ValueError(f"{origin} holds no unstructured layer to take a budget from")
    budget = {}
    for module, percent in zip(rows["module"].astype(str), rows["sparsity"].astype(float), strict=True):
        if not 0.0 <= percent <= 100.0:
            raise ValueError(
                f"{origin}: sparsity of {module!r} must be a percentage in [0, 100], got {percent!r}"
            )
        budget[module] = percent / 100.0
    return budget


def resolve_budget(model: nn.Module, budget: Mapping[str, float]) -> dict[str, float]:
    """Map the budget's module paths onto ``model``'s Conv/Linear paths.

    A path matches exactly, or up to a leading prefix on either side (an STR report written for
    ``lightning_module.model`` names ``layer1.0.conv1``; the same layer in the LightningModule is
    ``model.layer1.0.conv1``). Every budget entry must match exactly one layer, else ``ValueError``.
    """
    layers = list(prunable_layers(model))
    resolved: dict[str, float] = {}
    for key, value in budget.items():
        value = _check_fraction(key, value)
        if key in layers:
            candidates = [key]
        else:
            candidates = [n for n in layers if n.endswith("." + key) or key.endswith("." + n)]
        if len(candidates) != 1:
            found = "no layer" if not candidates else f"several layers {candidates}"
            raise ValueError(
                f"budget entry {key!r} matches {found} of {type(model).__name__}; "
                f"its Conv/Linear layers are {layers[:6]}{' …' if len(layers) > 6 else ''}"
            )
        if candidates[0] in resolved:
            raise ValueError(f"budget entries collide on layer {candidates[0]!r}")
        resolved[candidates[0]] = value
    return resolved


DISTRIBUTIONS = ("uniform", "erk")


def budget_targets(
    model: nn.Module,
    budget_from: str | Path | pd.DataFrame | None = None,
    sparsity: float | None = None,
    distribution: str = "uniform",
    include: Iterable[str] | None = None,
    exclude: Iterable[str] | None = None,
) -> dict[str, float]:
    """Per-layer targets for a pruning baseline, as a training CLI gets them from its flags.

    Exactly one of ``budget_from`` (an STR run folder / ``report.csv`` / report table: STR's learned
    per-layer budget, ``--budget-from``) and ``sparsity`` (an overall fraction in [0, 1], spread by
    ``distribution``: ``"uniform"`` or ``"erk"``) must be given. Returns ``{module path: fraction}``
    resolved against ``model``'s layer paths.
    """
    if (budget_from is None) == (sparsity is None):
        raise ValueError(
            "give either budget_from (an STR run's report.csv) or sparsity (a fraction), not both"
            if budget_from is not None
            else "a pruning baseline needs budget_from or sparsity"
        )
    if budget_from is not None:
        return resolve_budget(model, load_budget(budget_from))
    if distribution not in DISTRIBUTIONS:
        raise ValueError(
            f"unknown budget distribution {distribution!r}; choose one of: {', '.join(DISTRIBUTIONS)}"
        )
    make = uniform_budget if distribution == "uniform" else erk_budget
    return make(model, sparsity, include, exclude)
