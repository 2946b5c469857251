"""Rank vs accuracy on real speech (FSDD), through the training CLI — the paper's central RNN claim, tested.

    python benchmarks/rank_vs_accuracy.py [--epochs 300] [--seeds 0 1 2] [--jobs 2] [--quick]

Runs (FastGRNN hidden 100, 32 log-mel × 99 frames, batch 100), each over every seed:

1. full rank (``--mode dense``);
2. STR low-rank at several threshold strengths, free and orthogonal factors;
3. fixed-rank ("vanilla") training from scratch at exactly the ranks each STR run ended with
   (``--mode fixed-rank --budget-from <STR run>``);
4. one LSTM low-rank comparison (LSTM dense vs LSTM + STR).

Every run is a ``python -m strrnn.train`` process at one thread (small recurrent models train fastest that way);
``--jobs`` of them run side by side. Finished runs are reused (their ``summary.json`` exists), so an interrupted
suite resumes. Writes ``<out>/table.md``, ``<out>/table.csv`` and ``<out>/accuracy_vs_params.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from strrnn import compare  # noqa: E402


def train(run_dir: Path, args: list[str], log: Path) -> Path:
    """Run one training process (skipped when its summary exists); return its folder."""
    if (run_dir / "summary.json").is_file():
        return run_dir
    resume = ["--resume"] if (run_dir / "last.ckpt").is_file() else ["--overwrite"]
    command = [sys.executable, "-m", "strrnn.train", *args, "--out", str(run_dir), "--no-progress-bar", *resume]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with log.open("w") as handle:
        result = subprocess.run(command, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise RuntimeError(f"run failed ({result.returncode}): {' '.join(command)}; see {log}")
    return run_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "fsdd"))
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "rank_vs_accuracy"))
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--strengths", type=float, nargs="+", default=[3e-2, 1e-1, 3e-1],
                        help="threshold decays (--threshold-decay) of the STR runs")
    parser.add_argument("--factors", nargs="+", default=["free", "orthogonal"])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--threshold-lr", type=float, default=None, help="passed to every STR run")
    parser.add_argument("--no-lstm", action="store_true")
    parser.add_argument("--no-vanilla", action="store_true", help="skip the fixed-rank runs at STR's ranks")
    parser.add_argument("--quick", action="store_true", help="5 epochs, one seed, one strength, free factors")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: tabulate every finished run folder already in --out")
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.seeds, args.strengths, args.factors = 5, [0], [1e-1], ["free"]
    out = Path(args.out)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    base = ["--dataset", "fsdd", "--data-dir", args.data_dir, "--epochs", str(args.epochs), "--hidden-size", "100",
            "--batch-size", "100", "--weight-decay", "1e-3"]

    def job(name: str, extra: list[str]):
        return lambda: train(out / name, base + extra, out / "logs" / f"{name}.log")

    first = []
    for seed in args.seeds:
        s = ["--seed", str(seed)]
        first.append(job(f"dense-s{seed}", ["--mode", "dense", *s]))
        tlr = ["--threshold-lr", str(args.threshold_lr)] if args.threshold_lr else []
        for factors in args.factors:
            for strength in args.strengths:
                first.append(job(f"str-{factors}-{strength:g}-s{seed}",
                                 ["--mode", "lowrank", "--factors", factors, "--threshold-decay", str(strength),
                                  *tlr, *s]))
        if not args.no_lstm:
            first.append(job(f"lstm-dense-s{seed}", ["--mode", "dense", "--cell", "lstm", *s]))
            first.append(job(f"lstm-str-{args.strengths[-1]:g}-s{seed}",
                             ["--mode", "lowrank", "--cell", "lstm", "--threshold-decay", str(args.strengths[-1]), *s]))
    if args.report_only:
        runs = sorted(p.parent for p in out.glob("*/summary.json"))
        write_report(out, runs)
        return
    with ThreadPoolExecutor(args.jobs) as pool:
        runs = list(pool.map(lambda f: f(), first))
        str_runs = [r for r in runs if r.name.startswith("str-")]
        vanilla = [job(f"vanilla-{r.name.removeprefix('str-')}", ["--mode", "fixed-rank", "--budget-from", str(r),
                                                                  "--seed", r.name.rsplit("-s", 1)[1]])
                   for r in str_runs]
        if not args.no_vanilla:
            runs += list(pool.map(lambda f: f(), vanilla))

    write_report(out, runs)


def write_report(out: Path, runs: list[Path]) -> None:
    """table.md (paired STR vs fixed-rank, then every group), table.csv, claims.json and the plot."""
    table = compare.compare(runs)
    markdown = paired_table(runs) + "\n\nEvery group (rows grouped by learned ranks):\n\n" + compare.to_markdown(table)
    (out / "table.md").write_text(markdown + "\n")
    table.to_csv(out / "table.csv", index=False)
    compare.plot(table[table["cell"] == "fastgrnn"], out / "accuracy_vs_params.png")
    print(markdown)
    result = claims(table)
    (out / "claims.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def paired_table(run_dirs) -> str:
    """STR per strength (3 seeds) beside fixed-rank training from scratch at each seed's learned ranks."""
    import statistics

    def load(run):
        return json.loads((Path(run) / "summary.json").read_text())

    def stats(values):
        values = [100 * v for v in values]
        return f"{statistics.mean(values):.2f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.2f}"

    by_name = {Path(r).name: r for r in run_dirs}
    lines = ["| model | strength | ranks (W,U) per seed | W,U params (mean % of dense) | STR test acc % | "
             "fixed-rank at STR's ranks, from scratch % | seeds |", "|---|---|---|---|---|---|---|"]
    dense = [load(r) for n, r in by_name.items() if n.startswith("dense-")]
    if dense:
        lines.append(f"| full rank (dense) | | (32,100) | 13,200 (100%) | {stats([d['test_acc'] for d in dense])} "
                     f"| | {len(dense)} |")
    groups: dict[str, list[str]] = {}
    for name in by_name:
        if name.startswith("str-"):
            groups.setdefault(name.rsplit("-s", 1)[0], []).append(name)
    for key in sorted(groups, key=lambda k: (k.split("-")[1], float(k.split("-")[2]))):
        strs = [load(by_name[n]) for n in sorted(groups[key])]
        vans = [load(by_name[v]) for n in sorted(groups[key])
                if (v := "vanilla-" + n.removeprefix("str-")) in by_name]
        ranks = " ".join("({},{})".format(*[s["ranks"][k] for k in sorted(s["ranks"], key=lambda k: k[-1] != "W")])
                         for s in strs)
        pct = statistics.mean(100 * s["params_str"] / s["params_str_dense"] for s in strs)
        params = statistics.mean(s["params_str"] for s in strs)
        _, factors, strength = key.split("-")
        lines.append(f"| STR {factors} | {strength} | {ranks} | {params:,.0f} ({pct:.0f}%) | "
                     f"{stats([s['test_acc'] for s in strs])} | {stats([v['test_acc'] for v in vans]) if vans else ''}"
                     f" | {len(strs)} |")
    return "\n".join(lines)


def claims(table) -> dict:
    """The paper's two claims, checked on this table (accuracies in percent)."""
    fast = table[table["cell"] == "fastgrnn"]
    dense = fast[fast["mode"] == "dense"]
    full = 100 * float(dense["test_acc_mean"].iloc[0]) if len(dense) else float("nan")
    result = {"full_rank_acc": full, "str_vs_vanilla": [], "within_0.5_of_full_at_half_params": []}
    for _, row in fast[fast["mode"] == "lowrank"].iterrows():
        match = fast[(fast["mode"] == "fixed-rank") & (fast["ranks"] == row["ranks"])]
        if len(match):
            result["str_vs_vanilla"].append({
                "ranks": row["ranks"], "factors": row["factors"], "str": 100 * row["test_acc_mean"],
                "vanilla": 100 * float(match["test_acc_mean"].iloc[0]),
                "holds": bool(row["test_acc_mean"] >= match["test_acc_mean"].iloc[0]),
            })
        if row["params_str_pct"] <= 50:
            result["within_0.5_of_full_at_half_params"].append({
                "ranks": row["ranks"], "params_pct": row["params_str_pct"], "str": 100 * row["test_acc_mean"],
                "holds": bool(100 * row["test_acc_mean"] >= full - 0.5),
            })
    return result


if __name__ == "__main__":
    main()
