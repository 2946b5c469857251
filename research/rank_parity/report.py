"""Write ``results/ablation.md``: every lever tried, STR beside fixed-rank training at the ranks it learned.

    python -m research.rank_parity.report [--results research/rank_parity/results]

One row per (lever, strength, epochs): mean ranks (and per seed), W,U parameters (% of the dense 13,200), STR's
own test accuracy, the fixed-rank twins' (vanilla free factors trained from scratch at each seed's ranks, same
epochs and seed), the gap STR − fixed-rank (mean of the per-seed differences over the seeds whose twin exists,
± their std), the same gap on the validation takes (300 clips no run selects on: a second held-out set) and the
seeds. Accuracies are of the final model, in percent, mean ± std over seeds. Failed runs are
listed below the table.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

from research.rank_parity import harness


def _ms(values: list[float]) -> str:
    if not values:
        return ""
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def load(results: Path) -> tuple[list[dict], list[dict]]:
    runs, failed = [], []
    for path in sorted(results.glob("*.json")):
        payload = json.loads(path.read_text())
        (failed if path.name.endswith(".failed.json") else runs).append(payload)
    return runs, failed


def table(runs: list[dict]) -> str:
    """The ablation table (markdown)."""
    fixed = {(r["ranks"]["W"], r["ranks"]["U"], r["seed"], r["epochs"]): r for r in runs if r["lever"] == "fixed-rank"}
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in runs:
        if r["lever"] != "fixed-rank":
            groups[(r["lever"], r["strength"], r["epochs"])].append(r)
    lines = ["| lever | strength | epochs | mean ranks (W,U) | ranks per seed | W,U params % | STR acc % | "
             "fixed-rank acc % at same ranks | gap STR − fixed (paired) | val gap (paired) | seeds |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]

    def order(key):
        lever, strength, epochs = key
        names = list(harness.LEVERS)
        return (epochs, names.index(lever) if lever in names else len(names), lever, strength or 0.0)

    for key in sorted(groups, key=order):
        lever, strength, epochs = key
        rs = sorted(groups[key], key=lambda r: r["seed"])
        accs = [100 * r["test_acc"] for r in rs]
        twins = [fixed.get((r["ranks"]["W"], r["ranks"]["U"], r["seed"], r["epochs"])) for r in rs]
        twin_accs = [100 * t["test_acc"] for t in twins if t is not None]
        gaps = [100 * (r["test_acc"] - t["test_acc"]) for r, t in zip(rs, twins) if t is not None]
        val_gaps = [100 * (r["val_acc"] - t["val_acc"]) for r, t in zip(rs, twins) if t is not None]
        mean_w = statistics.mean(r["ranks"]["W"] for r in rs)
        mean_u = statistics.mean(r["ranks"]["U"] for r in rs)
        per_seed = " ".join(f"({r['ranks']['W']},{r['ranks']['U']})" for r in rs)
        pct = statistics.mean(r["wu_pct"] for r in rs)
        seeds = ",".join(str(r["seed"]) for r in rs)
        partial = twin_accs and len(twin_accs) != len(rs)
        twin_note = _ms(twin_accs) + (f" ({len(twin_accs)} of {len(rs)} seeds)" if partial else "")
        lines.append(f"| {lever} | {'' if strength is None else f'{strength:g}'} | {epochs} | "
                     f"({mean_w:.1f}, {mean_u:.1f}) | {per_seed} | {pct:.1f} | {_ms(accs)} | {twin_note} | "
                     f"{_ms(gaps)} | {_ms(val_gaps)} | {seeds} |")
    return "\n".join(lines)


def levers_legend(runs: list[dict]) -> str:
    used = {r["lever"] for r in runs}
    lines = ["| lever | what it changes |", "|---|---|"]
    for name, recipe in harness.LEVERS.items():
        if name in used:
            lines.append(f"| {name} | {recipe.description.replace('|', '∣')} |")
    return "\n".join(lines)


def write(results: Path) -> str:
    runs, failed = load(results)
    text = ["# STR vs fixed-rank at the ranks STR learns — ablation (FSDD, FastGRNN hidden 100)", "",
            "Written by `python -m research.rank_parity.report` from the JSON results of "
            "`research/rank_parity/harness.py`"
            " (plain PyTorch loop, the CLI's setting: Adam lr 1e-3 cosine per step, batch 100, weight decay 1e-3,"
            " STR groups lr 0.03 / eps 0.1 unless the lever says otherwise). Test accuracy of the final model"
            " (no checkpoint selection), FSDD official test split (300 clips); mean ± std over seeds. W,U params:"
            " exported `min(r(out+in), out·in)` summed over W (100×32) and U (100×100), % of 13,200. The validation"
            " takes 5–9 (300 clips) are used by no run for any choice, so the val gap is a second held-out"
            " measurement of the same comparison.", "",
            ]
    summary = results / "summary.md"
    if summary.is_file():
        text += [summary.read_text().strip(), "", "## Every lever tried", ""]
    text += [table(runs), "", "Levers:", "", levers_legend(runs), ""]
    notes = results / "notes.md"
    if notes.is_file():
        text += [notes.read_text().strip(), ""]
    if failed:
        text += ["Failed runs:", ""] + [f"- {f['name']}: {f['error']}" for f in failed] + [""]
    times = [r["wall_s"] for r in runs]
    if times:
        text.append(f"Wall time per run: median {statistics.median(times):.0f} s (min {min(times):.0f}, max "
                    f"{max(times):.0f}), one thread, 2-core shared machine.")
    out = "\n".join(text) + "\n"
    tmp = results / ".ablation.md.tmp"
    tmp.write_text(out)
    tmp.replace(results / "ablation.md")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default=str(harness.RESULTS))
    args = parser.parse_args(argv)
    print(write(Path(args.results)))


if __name__ == "__main__":
    main()
