"""Unstructured STR vs GMP vs uniform magnitude pruning on real images (scikit-learn digits), through the CLI.

    python -m benchmarks.cnn_sparsity [--seeds 0 1 2] [--strengths 4e-2 5e-2 8e-2] [--epochs 15] [--jobs 2] [--quick]

For every seed: a dense run; STR (``--mode unstructured``) at each strength; then, at the overall sparsity each
STR run reached, GMP with a uniform budget, GMP with STR's learned per-layer budget (``--budget-from``), and
one-shot uniform magnitude pruning. Reports test accuracy (mean ± std over seeds), sparsity and FLOPs (the
paper's rule: one multiply-add = one FLOP, a layer's FLOPs scale with its density), and STR's learned
per-layer budget beside the uniform one. Writes ``<out>/table.md`` and ``<out>/budgets.md``.
"""

from __future__ import annotations

import argparse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from benchmarks import RESULTS
from benchmarks.runner import train_run
from strrnn.cli.compare import mean_std


def train(run_dir: Path, flags: list[str]) -> dict:
    """One training process (reused when finished with the same flags, resumed when interrupted)."""
    return train_run(run_dir, flags, run_dir.parent / "logs" / f"{run_dir.name}.log")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None,
                        help="results folder (default: benchmarks/results/cnn_sparsity; --quick: "
                             "benchmarks/results/cnn_sparsity/quick)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--strengths", type=float, nargs="+", default=[4e-2, 5e-2, 8e-2])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="a smoke run: one seed, one strength (8e-2), 5 epochs")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.strengths, args.epochs = [0], [8e-2], 5
    results = RESULTS / "cnn_sparsity"
    out = Path(args.out or (results / "quick" if args.quick else results))
    out.mkdir(parents=True, exist_ok=True)
    base = ["--dataset", "digits", "--model", "small_cnn", "--epochs", str(args.epochs), "--batch-size", "128",
            "--optimizer", "sgd", "--lr", "0.1", "--weight-decay", "5e-4"]

    with ThreadPoolExecutor(args.jobs) as pool:
        first = {}
        for seed in args.seeds:
            first[("dense", None, seed)] = (out / f"dense-s{seed}", base + ["--mode", "dense", "--seed", str(seed)])
            for lam in args.strengths:
                first[("str", lam, seed)] = (out / f"str-{lam:g}-s{seed}",
                                             base + ["--mode", "unstructured", "--threshold-decay", str(lam),
                                                     "--seed", str(seed)])
        done = dict(zip(first, pool.map(lambda job: train(*job), first.values())))
        second = {}
        for (kind, lam, seed), summary in done.items():
            if kind != "str":
                continue
            sparsity = round(summary["sparsity"] / 100, 4)
            str_dir = first[(kind, lam, seed)][0]
            second[("gmp-uniform", lam, seed)] = (
                out / f"gmp-{lam:g}-s{seed}",
                base + ["--mode", "gmp", "--sparsity", str(sparsity), "--seed", str(seed)])
            second[("gmp-str-budget", lam, seed)] = (
                out / f"gmpb-{lam:g}-s{seed}", base + ["--mode", "gmp", "--budget-from", str(str_dir),
                                                       "--seed", str(seed)])
            second[("magnitude-uniform", lam, seed)] = (
                out / f"mag-{lam:g}-s{seed}", base + ["--mode", "magnitude", "--sparsity", str(sparsity),
                                                      "--seed", str(seed)])
        done.update(zip(second, pool.map(lambda job: train(*job), second.values())))

    folders = {key: job[0] for key, job in {**first, **second}.items()}
    frame = pd.DataFrame([
        {"method": kind, "strength": lam, "seed": seed, "acc": 100 * s["test_acc"], "flops": s["flops"],
         "sparsity": measured_sparsity(folders[(kind, lam, seed)])}
        for (kind, lam, seed), s in done.items()
    ])
    lines = ["| method | level (STR strength) | sparsity % (mean) | FLOPs (mean) | test acc % (mean ± std) | seeds |",
             "|---|---|---|---|---|---|"]
    for (method, lam), group in frame.groupby(["method", "strength"], dropna=False, sort=False):
        accs = list(group["acc"])
        lines.append(f"| {method} | {'' if pd.isna(lam) else f'{lam:g}'} | {group['sparsity'].mean():.1f} | "
                     f"{group['flops'].mean():,.0f} | {mean_std(accs)} | {len(accs)} |")
    table = "\n".join(lines)
    (out / "table.md").write_text(table + "\n")
    print(table)
    budgets = budget_table(out, args.strengths, args.seeds[0])
    (out / "budgets.md").write_text(budgets + "\n")
    print("\n" + budgets)


def measured_sparsity(run_dir: Path) -> float:
    """Percent of zero conv/linear weights in the run's exported model (``flops.csv`` totals)."""
    flops = pd.read_csv(run_dir / "flops.csv")
    total = flops[flops["layer"] == "total"].iloc[0]
    return 100.0 * (1.0 - total["params"] / total["params_dense"])


def budget_table(out: Path, strengths, seed: int) -> str:
    """STR's learned per-layer sparsity beside the uniform budget at the same overall sparsity."""
    lines = ["| layer | " + " | ".join(f"STR λ={lam:g} | uniform" for lam in strengths) + " |",
             "|---|" + "---|---|" * len(strengths)]
    per_layer = {}
    for lam in strengths:
        flops = pd.read_csv(out / f"str-{lam:g}-s{seed}" / "flops.csv")
        layers = flops[flops["layer"] != "total"]
        overall = measured_sparsity(out / f"str-{lam:g}-s{seed}")
        for _, row in layers.iterrows():
            per_layer.setdefault(row["layer"], []).append((100 * (1 - row["density"]), overall))
    for layer, values in per_layer.items():
        lines.append(f"| {layer} | " + " | ".join(f"{a:.1f} | {u:.1f}" for a, u in values) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
