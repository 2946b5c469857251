"""Rank-vs-accuracy table across run folders: ``strrnn compare RUN_DIR... [--csv F] [--plot F] [--ranks-plot F]``.

Runs are seeds of one configuration only when every setting of their ``config.yaml`` but the seed matches
(:func:`run_settings`); the settings in which groups differ are printed ("groups differ in: pooling") and named in
each row's ``settings`` column. A run folder named twice, under any path, or a copy of one (the same
``config.yaml``, ``summary.json`` and ``exported.pt``) counts once. A run without ``config.yaml`` joins the group
whose runs' ``summary.json`` names the same settings, when exactly one does. Each group reports its test accuracy as
mean ± std over its seeds, the ranks each seed learned, the parameters of the STR tensors (W and U) after
export — for a run without STR (dense, pruning baselines) those of the tensors STR would compress, so a dense row
reads 100% — and of the whole exported model.
Printed as markdown, written as CSV and plotted: accuracy vs parameters, one panel per data set, one marker per
mode; ``--ranks-plot`` draws each tensor's rank over the epochs of every run (from its ``ranks.csv``).

Every output path is checked before anything is computed or written (:func:`strrnn.run_folder.check_output`: never
a run's own file, a folder, or an unwritable place; a plot's name must end in a format matplotlib writes), and
each file is written atomically.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import math
import os
import statistics
import sys
import textwrap
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from ..fileio import atomic_path, atomic_write_text
from ..optional import MissingExtraError, require
from ..run_folder import RunFolderError, check_output
from .train import OPERATIONAL, build_parser

if TYPE_CHECKING:  # pandas, torch and the data sets are imported by the functions that use them, not for --help
    import pandas as pd

MARKERS = {"dense": "s", "lowrank": "o", "fixed-rank": "^", "unstructured": "D"}
# settings that do not change what a run computes: where it ran and logged, where its data came from
NOT_SETTINGS = frozenset(OPERATIONAL | {"seed", "data_dir", "download"})
# settings the table shows in columns of their own (the strength column also stands for the budget flags)
_SHOWN = frozenset({"dataset", "mode", "cell", "factors", "strength", "target_rank", "target_params",
                    "threshold_decay", "ranks"})
# a run folder without config.yaml (older versions): the settings its summary.json names
_SUMMARY_SETTINGS = ("dataset", "mode", "model", "cell", "hidden_size", "epochs", "weight_decay", "factors",
                     "threshold_decay", "strength")
# of those, the ones summary.json records as given (threshold_decay and strength are derived from several flags)
_RECORDED = ("dataset", "mode", "model", "cell", "hidden_size", "epochs", "weight_decay", "factors")


def run_settings(run_dir, summary_only: bool = False) -> dict:
    """The settings that decide what the run in ``run_dir`` computed: its ``config.yaml`` (a flag added since the
    run at its default) without the seed, the operational settings (:data:`strrnn.cli.train.OPERATIONAL`), where the
    data lives and the settings its mode never reads (:attr:`strrnn.modes.Mode.ignores`, and the mode flags it
    does not accept).

    A fixed-rank run's setting is the ranks it trained at (``ranks``), whether ``--rank-w/--rank-u`` or
    ``--budget-from RUN`` gave them: twins of different seeds at the same ranks trained one configuration. Another
    ``--budget-from`` counts as the folder's name. Without ``config.yaml`` (or with ``summary_only``), the settings
    ``summary.json`` names. Where ``config.yaml`` and ``summary.json`` disagree on one of those (``config.yaml``
    edited after the run), ``summary.json``'s value counts, with a warning: it records what the run trained.

    Raises:
        ValueError: naming the file, for a ``summary.json`` or ``config.yaml`` that cannot be read.
    """
    from ..artifacts import read_summary

    run_dir = Path(run_dir)
    summary = read_summary(run_dir)
    if (run_dir / "config.yaml").is_file() and not summary_only:
        settings = {**_flag_defaults(), **_read_config(run_dir / "config.yaml")}
        edited = [key for key in _RECORDED if key in summary and key in settings and summary[key] != settings[key]]
        if edited:
            warnings.warn(f"{run_dir}: config.yaml says {', '.join(f'{k}={settings[k]}' for k in edited)} but "
                          f"summary.json {', '.join(f'{k}={summary[k]}' for k in edited)} (config.yaml edited after "
                          "the run?); grouped by summary.json, which records what the run trained", stacklevel=2)
            settings.update({key: summary[key] for key in edited})
    else:
        settings = {key: summary[key] for key in _SUMMARY_SETTINGS if key in summary}
    from ..modes import MODES

    mode = MODES.get(settings.get("mode"))
    ignored = NOT_SETTINGS | (mode.unread if mode is not None else frozenset())
    settings = {key: _hashable(value) for key, value in settings.items() if key not in ignored}
    if settings.get("mode") == "fixed-rank" and summary.get("ranks"):
        for key in ("rank_w", "rank_u", "budget_from"):
            settings.pop(key, None)
        settings["ranks"] = ",".join(map(str, summary["ranks"].values()))
    elif settings.get("budget_from"):
        settings["budget_from"] = Path(str(settings["budget_from"])).name
    return settings


def _read_config(path: Path) -> dict:
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        where = getattr(err, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise ValueError(f"{path}: not a readable run configuration (invalid YAML{at}); restore it or move "
                         "the run folder out of the comparison") from None
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a mapping of settings, found a {type(config).__name__}")
    return config


@functools.cache
def _flag_defaults() -> dict:
    return vars(build_parser().parse_args([]))


def _hashable(value):
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value


def _differing(groups: list[dict]) -> list[str]:
    """The settings whose values differ among ``groups`` (among the groups whose mode reads them)."""
    keys = sorted({key for settings in groups for key in settings})
    return [key for key in keys if len({repr(s[key]) for s in groups if key in s}) > 1]


def _text(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ",".join(map(_text, value))
    return str(value)


def compressible_params(run_dir) -> tuple[float, float]:
    """``(dense, kept)`` parameters of the tensors STR compresses, counted in the exported model of ``run_dir``:
    the recurrent W and U when the model has recurrent cells (what ``--mode lowrank`` factorizes), else every
    conv/linear weight (``--mode unstructured``); ``kept`` counts nonzeros (a pruning baseline's zeros are
    exact). For runs whose summary has no STR tensor; ``(nan, nan)`` with a warning if the export cannot be
    loaded."""
    import torch

    from ..artifacts import load_exported
    from ..selection import select_weights

    try:
        model, _ = load_exported(run_dir)
    except (ValueError, OSError, RuntimeError, KeyError) as err:
        warnings.warn(f"{run_dir}: cannot count its W,U parameters ({err})", stacklevel=2)
        return math.nan, math.nan
    chosen = select_weights(model)
    recurrent = [(path, m, name) for path, m, name in chosen if getattr(type(m), "recurrent_weights", None)]
    tensors = [getattr(m, name) for _, m, name in recurrent or chosen]
    return float(sum(t.numel() for t in tensors)), float(sum(int(torch.count_nonzero(t)) for t in tensors))


def compare(run_dirs) -> pd.DataFrame:
    """The grouped table (one row per configuration, :func:`run_settings`) for the given run folders.

    Columns: ``dataset``, ``mode``, ``cell``, ``factors``, ``strength``, ``ranks`` (each seed's, `` / ``-separated
    when they differ), ``seeds``, ``test_acc_mean``/``_std``, ``params_str``/``_dense``/``_pct`` (W,U),
    ``params_exported``, ``settings`` (the settings that split this data set's groups and no other column shows,
    e.g. ``pooling=mean``) and ``runs``. ``table.attrs["differ"]``: per data set, every setting in which its groups
    differ. Runs without a test accuracy (a run that broke before testing) are left out with a warning naming them.

    Raises:
        ValueError: no run folder given, or none of them has a test accuracy.
    """
    import pandas as pd

    from ..artifacts import read_summaries

    runs = read_summaries(_distinct_runs(run_dirs))
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
    for column in ("dataset", "mode", "cell", "factors", "strength", "ranks", "params_str", "params_str_dense"):
        if column not in runs:
            runs[column] = None
    # the STR strength: summaries name it (lowrank: the schedule's strength or budget; unstructured: the threshold
    # decay); older summaries only have the decays
    decay = runs["threshold_decay"] if "threshold_decay" in runs else runs.get("weight_decay")
    legacy = decay.where(runs["mode"].isin(["lowrank", "unstructured"])) if decay is not None else None
    runs["strength"] = runs["strength"].where(runs["strength"].notna(), legacy) if "strength" in runs else legacy
    runs.loc[runs["mode"] == "dense", "factors"] = None
    for column in ("params_str", "params_str_dense"):
        runs[column] = pd.to_numeric(runs[column], errors="coerce").astype(float)
    for i in runs.index[~(runs["params_str_dense"] > 0)]:  # no STR tensor: count what STR would compress
        runs.loc[i, ["params_str_dense", "params_str"]] = compressible_params(runs.at[i, "run"])
    settings = _join_partial_runs({run: run_settings(run) for run in runs["run"]})
    runs["key"] = [repr(sorted(settings[run].items())) for run in runs["run"]]
    _warn_shared_seeds(runs)
    groups = {key: settings[run] for key, run in zip(runs["key"], runs["run"])}
    by_dataset: dict[str, list[dict]] = {}
    for group in groups.values():
        by_dataset.setdefault(str(group.get("dataset")), []).append(group)
    differ = {dataset: _differing(members) for dataset, members in by_dataset.items()}
    labels = {key: ", ".join(f"{k}={_text(group[k])}" for k in differ[str(group.get("dataset"))]
                             if k not in _SHOWN and k in group) for key, group in groups.items()}
    runs["shown"] = runs["run"].map(portable_path)
    grouped = runs.groupby("key", sort=False)
    table = grouped.agg(
        dataset=("dataset", "first"), mode=("mode", "first"), cell=("cell", "first"), factors=("factors", "first"),
        strength=("strength", "first"), ranks=("ranks", _distinct),
        seeds=("seed", "count"),
        test_acc_mean=("test_acc", "mean"),
        test_acc_std=("test_acc", "std"),
        params_str=("params_str", "mean"),
        params_str_dense=("params_str_dense", "mean"),
        params_exported=("params_exported", "mean"),
        runs=("shown", _distinct),
    ).reset_index()
    table["settings"] = table.pop("key").map(labels)
    table["test_acc_std"] = table["test_acc_std"].fillna(0.0)
    table["params_str_pct"] = 100.0 * table["params_str"] / table["params_str_dense"].where(
        table["params_str_dense"] > 0)
    table = table.sort_values(["dataset", "params_str"], ascending=[True, False]).reset_index(drop=True)
    table.attrs["differ"] = differ
    return table


def mean_std(values, scale: float = 1.0) -> str:
    """``"mean ± std"`` of ``values`` times ``scale`` with two decimals (the sample std, 0 for one value): how every
    accuracy table of strrnn reports seeds."""
    values = [scale * float(v) for v in values]
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {spread:.2f}"


def portable_path(path) -> str:
    """``path`` as a table shows it: relative to the current folder when it lies inside it (a table written into a
    repository then names no machine's folders), else as given."""
    resolved = Path(path).resolve()
    try:
        return str(resolved.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _identity(run_dir: Path) -> str | None:
    """A digest of what a run is (``config.yaml``, ``summary.json`` and ``exported.pt``): equal for copies of
    one run."""
    if not (run_dir / "summary.json").is_file():
        return None
    digest = hashlib.sha256()
    for name in ("config.yaml", "summary.json", "exported.pt"):
        try:
            digest.update(name.encode() + b"\0" + (run_dir / name).read_bytes() + b"\0")
        except OSError:
            digest.update(name.encode() + b"\0-")
    return digest.hexdigest()


def _distinct_runs(run_dirs) -> list[str]:
    """``run_dirs`` without repeats: the same folder under another path, or a copy of a run already given
    (:func:`_identity`); each left out with a warning naming the run it repeats."""
    kept, by_path, by_identity = [], {}, {}
    for run in map(str, run_dirs):
        resolved = os.path.realpath(run)
        if resolved in by_path:
            warnings.warn(f"{run} is {by_path[resolved]} again; counted once", stacklevel=3)
            continue
        identity = _identity(Path(run))
        if identity is not None and identity in by_identity:
            warnings.warn(f"{run} is a copy of {by_identity[identity]} (the same config.yaml, summary.json and "
                          "exported.pt); counted once", stacklevel=3)
            continue
        by_path[resolved] = run
        if identity is not None:
            by_identity[identity] = run
        kept.append(run)
    return kept


def _join_partial_runs(settings: dict[str, dict]) -> dict[str, dict]:
    """Give a run without ``config.yaml`` the settings of the one group of runs with a ``config.yaml`` whose
    ``summary.json`` names the same settings (with none or several such groups it stays a group of its own)."""
    partial = [run for run in settings if not (Path(run) / "config.yaml").is_file()]
    if not partial or len(partial) == len(settings):
        return settings
    brief = {run: run_settings(run, summary_only=True) for run in settings}
    joined = dict(settings)
    for run in partial:
        groups = {repr(sorted(settings[other].items())): other for other in settings
                  if other not in partial and brief[other] == brief[run]}
        if len(groups) == 1:
            joined[run] = settings[next(iter(groups.values()))]
    return joined


def _warn_shared_seeds(runs) -> None:
    if "seed" not in runs:
        return
    for _, group in runs.groupby("key", sort=False):
        repeated = group["seed"][group["seed"].duplicated(keep=False)]
        if not repeated.empty:
            names = ", ".join(group.loc[repeated.index, "run"])
            warnings.warn(f"runs {names} share seed {repeated.iloc[0]}: they are averaged as if they were "
                          "different seeds", stacklevel=3)


def _distinct(values) -> str:
    return " / ".join(dict.fromkeys(str(v) for v in values))


def to_markdown(table: pd.DataFrame) -> str:
    """Markdown with accuracy as ``mean ± std`` in percent; W,U params of a run without STR are those of its dense
    W and U (100%)."""
    import pandas as pd

    lines = ["| dataset | mode | cell | factors | strength | ranks (W,U) | W,U params (% of dense) "
             "| model params | test acc % (mean ± std) | seeds | settings |", "|" + "---|" * 11]
    for _, r in table.iterrows():
        wd = "" if pd.isna(r["strength"]) else (f"{r['strength']:g}" if isinstance(r["strength"], float)
                                                 else str(r["strength"]))
        pct = "" if pd.isna(r["params_str_pct"]) else f" ({r['params_str_pct']:.0f}%)"
        params = "n/a" if pd.isna(r["params_str"]) else f"{r['params_str']:,.0f}{pct}"
        lines.append(
            f"| {r['dataset']} | {r['mode']} | {r['cell']} | {'' if pd.isna(r['factors']) else r['factors']} "
            f"| {wd} | {r['ranks']} | {params} | {int(r['params_exported']):,} "
            f"| {100 * r['test_acc_mean']:.2f} ± {100 * r['test_acc_std']:.2f} | {int(r['seeds'])} "  # from the groupby
            f"| {r.get('settings') or ''} |"
        )
    return "\n".join(lines)


def differences(table: pd.DataFrame) -> list[str]:
    """One line per data set whose groups differ in some setting: ``"google12: groups differ in: pooling"``."""
    return [f"{dataset}: groups differ in: {', '.join(keys)}"
            for dataset, keys in sorted(table.attrs.get("differ", {}).items()) if keys]


def _pyplot(feature: str):
    matplotlib = require("matplotlib", extra="plot", feature=feature)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot(table: pd.DataFrame, path: str | Path, title: str | None = None):
    """Accuracy vs parameters of the exported model, one panel per data set (their accuracies are not
    comparable), one marker per mode and a legend entry per setting that splits the groups; error bars = std
    over seeds.

    Panels are titled by their data set; ``title`` is the figure's (the panel's, with one data set). Returns the
    figure (closed).
    """
    import pandas as pd

    plt = _pyplot("The accuracy-vs-parameters plot")
    datasets = list(dict.fromkeys(table["dataset"].astype(str)))
    fig, axes = plt.subplots(1, len(datasets), figsize=(6.5 * len(datasets), 4.2), squeeze=False)
    settings = table["settings"].fillna("") if "settings" in table else pd.Series("", index=table.index)
    for ax, dataset in zip(axes[0], datasets):
        rows = table[table["dataset"].astype(str) == dataset]
        for (mode, setting), group in rows.groupby([rows["mode"], settings[rows.index]], sort=False):
            ax.errorbar(group["params_exported"], 100 * group["test_acc_mean"], yerr=100 * group["test_acc_std"],
                        fmt=MARKERS.get(mode, "x"), label=f"{mode} ({setting})" if setting else mode, capsize=3,
                        linestyle="none")
        ax.set_xlabel("parameters of the exported model")
        ax.set_ylabel("test accuracy (%)")
        # long titles wrap instead of running off the figure
        ax.set_title(textwrap.fill(title, 70) if title and len(datasets) == 1 else dataset, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    if title and len(datasets) > 1:
        fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return fig


def _save(fig, path: str | Path) -> None:
    """Write the figure atomically, in the format its file name ends in (PNG without one)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format=Path(path).suffix.lstrip(".").lower() or "png")


def read_ranks(run_dir) -> pd.DataFrame:
    """The rank of every low-rank tensor after each epoch, from ``run_dir/ranks.csv``: columns ``epoch``,
    ``tensor`` (``<module>.<tensor>``), ``rank`` and ``mode`` (``lowrank`` or ``fixed-rank``); empty for a run
    without low-rank tensors (or without ranks.csv). A resumed run's repeated epochs keep their last row."""
    import pandas as pd

    path = Path(run_dir) / "ranks.csv"
    if not path.is_file() or path.stat().st_size == 0:
        return pd.DataFrame(columns=["epoch", "tensor", "rank", "mode"])
    frame = pd.read_csv(path)
    frame = frame[pd.to_numeric(frame.get("rank"), errors="coerce").notna()]
    frame = frame.assign(tensor=frame["module"].astype(str) + "." + frame["tensor"].astype(str))
    frame = frame.drop_duplicates(["epoch", "tensor"], keep="last")
    return frame[["epoch", "tensor", "rank", "mode"]].astype({"epoch": int, "rank": int}).reset_index(drop=True)


def plot_ranks(run_dirs, path: str | Path):
    """Each tensor's rank over the epochs: one panel per tensor (``rnn.cells.0.W``, ...), one line per run in the
    same colour in every panel (dashed: fixed-rank runs). Returns the figure (closed).

    Raises:
        ValueError: none of the runs logged a rank (only ``--mode lowrank`` and ``fixed-rank`` runs do).
    """
    ranks = {str(run): read_ranks(run) for run in run_dirs}
    ranks = {run: frame for run, frame in ranks.items() if not frame.empty}
    if not ranks:
        raise ValueError("none of the runs logged a rank in its ranks.csv (only --mode lowrank and fixed-rank "
                         "runs have low-rank tensors); no ranks plot written")
    names = [Path(run).name for run in ranks]
    labels = dict(zip(ranks, names if len(set(names)) == len(names) else list(ranks)))
    tensors = list(dict.fromkeys(t for frame in ranks.values() for t in frame["tensor"]))
    plt = _pyplot("The ranks plot")
    columns, rows_ = min(len(tensors), 3), math.ceil(len(tensors) / 3)
    fig, axes = plt.subplots(rows_, columns, figsize=(4.8 * columns + 2.2, 3.6 * rows_), squeeze=False,
                             layout="constrained")
    colours = plt.get_cmap("tab10" if len(ranks) <= 10 else "tab20")
    for ax, tensor in zip(axes.flat, tensors):
        for i, (run, frame) in enumerate(ranks.items()):
            rows = frame[frame["tensor"] == tensor]
            if not rows.empty:
                ax.plot(rows["epoch"], rows["rank"], drawstyle="steps-post", color=colours(i % colours.N),
                        linestyle="--" if (rows["mode"] == "fixed-rank").all() else "-", label=labels[run])
        ax.set_title(tensor)
        ax.set_xlabel("epoch")
        ax.set_ylabel("rank")
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(tensors):]:
        ax.set_visible(False)
    handles, names = [], []
    for ax in axes.flat[:len(tensors)]:  # every run once, whichever panels it appears in
        for handle, name in zip(*ax.get_legend_handles_labels()):
            if name not in names:
                handles.append(handle)
                names.append(name)
    fig.legend(handles, names, loc="outside right upper", fontsize="small")
    _save(fig, path)
    plt.close(fig)
    return fig


def check_outputs(outputs: dict[str, str | None]) -> None:
    """Check every output file (``{flag: path}``; None: not asked for) before anything is computed or written:
    :func:`strrnn.run_folder.check_output` for each, a plot format matplotlib writes for the plots, and no two
    flags naming one file.

    Raises:
        ValueError: naming the flag and the path.
    """
    seen: dict[str, str] = {}
    for flag, path in outputs.items():
        if path is None:
            continue
        try:
            check_output(path, flag)
        except RunFolderError as err:
            raise ValueError(str(err)) from None
        if flag != "--csv":
            _check_plot_format(path, flag)
        resolved = os.path.realpath(os.path.expanduser(path))
        if resolved in seen:
            raise ValueError(f"{seen[resolved]} and {flag} name the same file {path}; give each its own")
        seen[resolved] = flag


def _check_plot_format(path: str, flag: str) -> None:
    try:
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError:  # no plot is drawn without matplotlib: nothing to check
        return
    formats = FigureCanvasBase.get_supported_filetypes()
    suffix = Path(path).suffix.lstrip(".").lower()
    if suffix and suffix not in formats:
        raise ValueError(f"{flag} {path}: matplotlib cannot write .{suffix} files; end the name in one of "
                         f"{', '.join('.' + f for f in sorted(formats))}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``strrnn compare``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="strrnn compare",
                                     description="Compare run folders: a table grouped by configuration, plots.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run folders written by strrnn train")
    parser.add_argument("--csv", default="compare.csv", help="where to write the table as CSV")
    parser.add_argument("--plot", default="compare.png",
                        help="where to write the accuracy-vs-parameters plot (one panel per data set)")
    parser.add_argument("--ranks-plot", default=None, metavar="FILE",
                        help="also draw each tensor's rank over the epochs of every run (from ranks.csv) into FILE")
    args = parser.parse_args(argv)
    try:
        check_outputs({"--csv": args.csv, "--plot": args.plot, "--ranks-plot": args.ranks_plot})
        table = compare(args.runs)
        if args.ranks_plot and all(read_ranks(run).empty for run in args.runs):
            raise ValueError("none of the runs logged a rank in its ranks.csv (only --mode lowrank and fixed-rank "
                             "runs have low-rank tensors); nothing written: drop --ranks-plot")
    except ValueError as err:
        print(f"strrnn compare: error: {err}", file=sys.stderr)
        return 2
    print(to_markdown(table))
    for line in differences(table):
        print(line)
    try:
        for path in (args.csv, args.plot, args.ranks_plot):
            if path:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.csv, table.to_csv(index=False))
    except OSError as err:
        print(f"strrnn compare: error: cannot write {args.csv}: {err}", file=sys.stderr)
        return 2
    written, status = [args.csv], 0
    try:
        plot(table, args.plot)
        written.append(args.plot)
    except MissingExtraError as err:  # the table and the CSV are still worth having
        print(f"strrnn compare: no plot written: {err}", file=sys.stderr)
    except OSError as err:
        print(f"strrnn compare: error: cannot write {args.plot}: {err}", file=sys.stderr)
        status = 2
    if args.ranks_plot:
        try:
            plot_ranks(args.runs, args.ranks_plot)
            written.append(args.ranks_plot)
        except MissingExtraError as err:
            print(f"strrnn compare: no ranks plot written: {err}", file=sys.stderr)
        except OSError as err:
            print(f"strrnn compare: error: cannot write {args.ranks_plot}: {err}", file=sys.stderr)
            status = 2
    print(f"\nwrote {', '.join(written)}")
    return status

if __name__ == "__main__":
    sys.exit(main())
