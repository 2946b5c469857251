"""Rank-vs-accuracy table across run folders: ``python -m strrnn.compare RUN_DIR... [--csv F] [--plot F]``.

Runs are grouped by dataset, mode, cell, factors and learned/fixed ranks; each group reports test accuracy as
mean ± std over its seeds, with the parameters of the STR tensors (W and U) after export and of the whole
exported model. Printed as markdown, written as CSV, and plotted (accuracy vs parameters, one marker per mode).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import pandas as pd

from .runs import read_summaries

GROUP = ["dataset", "mode", "cell", "factors", "strength", "ranks"]
MARKERS = {"dense": "s", "lowrank": "o", "fixed-rank": "^", "unstructured": "D"}


def compare(run_dirs) -> pd.DataFrame:
    """The grouped table (one row per group) for the given run folders.

    Runs without a test accuracy (a run that broke before testing) are left out with a warning naming them.

    Raises:
        ValueError: no run folder given, or none of them has a test accuracy.
    """
    runs = read_summaries(run_dirs)
    if runs.empty:
        raise ValueError("no run folders given")
    accuracy = pd.to_numeric(runs["test_acc"], errors="coerce") if "test_acc" in runs else pd.Series(float("nan"),
                                                                                                         runs.index)
    broken = runs.loc[accuracy.isna(), "run"].tolist()
    if broken:
        warnings.warn(f"left out {len(broken)} run(s) without a test accuracy: {', '.join(broken)}", stacklevel=2)
    runs = runs[accuracy.notna()].copy()
    if runs.empty:
        raise ValueError("none of the runs has a test accuracy (did every run fail?); nothing to compare")
    for column in GROUP:
        if column not in runs:
            runs[column] = None
    # the STR strength: summaries name it (lowrank: the schedule's strength or budget; unstructured: the threshold
    # decay); older summaries only have the decays
    decay = runs["threshold_decay"] if "threshold_decay" in runs else runs.get("weight_decay")
    legacy = decay.where(runs["mode"].isin(["lowrank", "unstructured"])) if decay is not None else None
    runs["strength"] = runs["strength"].where(runs["strength"].notna(), legacy) if "strength" in runs else legacy
    runs.loc[runs["mode"] == "dense", "factors"] = None
    grouped = runs.groupby(GROUP, dropna=False, sort=False)
    table = grouped.agg(
        seeds=("seed", "count"),
        test_acc_mean=("test_acc", "mean"),
        test_acc_std=("test_acc", "std"),
        params_str=("params_str", "mean"),
        params_str_dense=("params_str_dense", "mean"),
        params_exported=("params_exported", "mean"),
    ).reset_index()
    table["test_acc_std"] = table["test_acc_std"].fillna(0.0)
    table["params_str_pct"] = 100.0 * table["params_str"] / table["params_str_dense"].where(
        table["params_str_dense"] > 0)
    return table.sort_values(["dataset", "params_str"], ascending=[True, False]).reset_index(drop=True)


def to_markdown(table: pd.DataFrame) -> str:
    """Markdown with accuracy as ``mean ± std`` in percent."""
    lines = ["| dataset | mode | cell | factors | strength | ranks (W,U) | W,U params (% of dense) "
             "| model params | test acc % (mean ± std) | seeds |", "|" + "---|" * 10]
    for _, r in table.iterrows():
        wd = "" if pd.isna(r["strength"]) else (f"{r['strength']:g}" if isinstance(r["strength"], float)
                                                 else str(r["strength"]))
        pct = "" if pd.isna(r["params_str_pct"]) else f" ({r['params_str_pct']:.0f}%)"
        lines.append(
            f"| {r['dataset']} | {r['mode']} | {r['cell']} | {'' if pd.isna(r['factors']) else r['factors']} "
            f"| {wd} | {r['ranks']} | {int(r['params_str']):,}{pct} | {int(r['params_exported']):,} "
            f"| {100 * r['test_acc_mean']:.2f} ± {100 * r['test_acc_std']:.2f} | {int(r['seeds'])} |"
        )
    return "\n".join(lines)


def plot(table: pd.DataFrame, path: str | Path, title: str | None = None) -> None:
    """Accuracy vs parameters of the exported model, one marker per mode, error bars = std over seeds.

    ``title`` defaults to the data sets in ``table``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for mode, rows in table.groupby("mode", sort=False):
        ax.errorbar(rows["params_exported"], 100 * rows["test_acc_mean"], yerr=100 * rows["test_acc_std"],
                    fmt=MARKERS.get(mode, "x"), label=mode, capsize=3, linestyle="none")
    ax.set_xlabel("parameters of the exported model")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title or ", ".join(sorted(table["dataset"].astype(str).unique())))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m strrnn.compare", description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="run folders written by python -m strrnn.train")
    parser.add_argument("--csv", default="compare.csv", help="where to write the table as CSV")
    parser.add_argument("--plot", default="compare.png", help="where to write the accuracy-vs-parameters plot")
    args = parser.parse_args(argv)
    try:
        table = compare(args.runs)
    except ValueError as err:
        print(f"python -m strrnn.compare: error: {err}", file=sys.stderr)
        return 2
    print(to_markdown(table))
    table.to_csv(args.csv, index=False)
    plot(table, args.plot)
    print(f"\nwrote {args.csv} and {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
