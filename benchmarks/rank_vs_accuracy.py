"""Rank vs accuracy on real speech, through the training CLI — learned STR against its baselines, budget for budget.

    python -m benchmarks.rank_vs_accuracy [--epochs 100] [--seeds 0 1 2] [--jobs 2] [--quick | --report-only]
    python -m benchmarks.rank_vs_accuracy --dataset google12 --data-dir ../shared/data/speech_commands_sample

Data: FSDD by default (``../shared/data/fsdd``, else strrnn's FSDD folder: ``$STRRNN_FSDD`` or the user data
folder, where ``strrnn data download fsdd`` puts it); ``--dataset google12`` with a Speech Commands folder
(full archive or test-set layout) trains with that data set's recipe (``strrnn.cli.train.DATASET_DEFAULTS``) and
writes under ``benchmarks/results/speech_commands_sample/<epochs>ep`` unless ``--out`` says otherwise.

Runs (FastGRNN hidden 100, 32 log-mel × 99 frames, batch 100), each over every seed, named ``<kind>-<knob>-s<seed>``:

1. ``dense``: full rank (``--mode dense``);
2. ``str``: learned STR (``--mode lowrank``) at each ``--decays`` λ (the decay on ``s``, STR's knob), and at each
   ``--target-params`` budget (``str-params<N>``);
3. ``paper``: the paper's recipe as published (``--mode lowrank-paper``) at each ``--paper-decays`` λ;
4. ``gmpb``: spectral GMP (``--mode lowrank-gmp``) at exactly the W,U parameters each ``str`` run of the same seed
   reached (``--target-params``), started when that run finishes — the budget-matched baseline; and ``gmp`` at each
   ``--strengths`` value;
5. ``fixed-<run>``: fixed-rank ("vanilla") training from scratch at exactly the ranks each STR, paper or GMP run
   ended with, plain factors A·B (``--mode fixed-rank --budget-from <run>``);
6. one LSTM comparison: LSTM dense, LSTM + STR at ``--lstm-decay``, and its fixed-rank twin.

Every run is a ``python -m strrnn.train`` process at one thread (small recurrent models train fastest that way);
``--jobs`` of them run side by side. A finished run is reused only if it was made with the same settings (see
``benchmarks/runner.py``), so an interrupted suite resumes and a folder never mixes settings. Writes ``<out>/table.md``
(each method beside its fixed-rank twins, mean ± std over seeds), ``<out>/table.csv``, ``<out>/claims.json`` (the
paper's claims, judged) and ``<out>/accuracy_vs_params.png``. Run folders are named relative to the repository in
every table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

from benchmarks import REPO, RESULTS
from benchmarks.runner import StaleRunError, stale_settings, train_run
from strrnn.cli import compare

STR_DECAYS = [1.0, 3.0]  # learned STR: λ on s for ≈ 50% and ≈ 20% of FSDD's W,U parameters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="fsdd", choices=["fsdd", "google12"])
    parser.add_argument("--data-dir", default=None,
                        help="default: ../shared/data/fsdd, else $STRRNN_FSDD or the user data folder's fsdd (fsdd); "
                             "../shared/data/speech_commands_sample (google12)")
    parser.add_argument("--out", default=None,
                        help="results folder (default: benchmarks/results/rank_vs_accuracy/<epochs>ep; "
                             "--quick: benchmarks/results/rank_vs_accuracy/quick)")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--decays", type=float, nargs="*", default=STR_DECAYS,
                        help="--threshold-decay of the learned STR runs (--mode lowrank)")
    parser.add_argument("--target-params", type=int, nargs="*", default=[],
                        help="learned STR runs under a parameter budget (--mode lowrank --target-params N)")
    parser.add_argument("--paper-decays", type=float, nargs="*", default=[],
                        help="--threshold-decay of the paper-recipe runs (--mode lowrank-paper)")
    parser.add_argument("--strengths", type=float, nargs="*", default=[],
                        help="spectral GMP runs at a --strength (beside the budget-matched ones)")
    parser.add_argument("--no-gmp", action="store_true", help="skip spectral GMP at each STR run's budget")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--no-lstm", action="store_true")
    parser.add_argument("--lstm-decay", type=float, default=None,
                        help="--threshold-decay of the LSTM + STR run (default: the strongest of --decays)")
    parser.add_argument("--no-vanilla", action="store_true", help="skip the fixed-rank twins")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run of the whole pipeline: 5 epochs, one seed, one decay")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: tabulate every finished run folder already in --out")
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.seeds, args.decays = 5, [0], [3.0]
    data_dir = str(data_dir_for(args.dataset, args.data_dir))
    if (missing := missing_data(["--dataset", args.dataset, "--data-dir", data_dir])) is not None:
        raise SystemExit(missing)
    results = RESULTS / ("rank_vs_accuracy" if args.dataset == "fsdd" else "speech_commands_sample")
    out = Path(args.out or (results / "quick" if args.quick else results / f"{args.epochs}ep"))
    (out / "logs").mkdir(parents=True, exist_ok=True)
    base = ["--dataset", args.dataset, "--data-dir", data_dir, "--epochs", str(args.epochs), "--hidden-size", "100",
            "--batch-size", "100", "--weight-decay", "1e-3"]
    lstm_decay = max(args.decays or [1.0]) if args.lstm_decay is None else args.lstm_decay

    first: list[tuple[str, list[str]]] = []  # (run name, flags); per seed the LSTM runs, the slowest, go first
    for seed in args.seeds:
        s = ["--seed", str(seed)]
        if not args.no_lstm:
            first.append((f"lstm-str-{lstm_decay:g}-s{seed}",
                          ["--mode", "lowrank", "--cell", "lstm", "--threshold-decay", str(lstm_decay), *s]))
            first.append((f"lstm-dense-s{seed}", ["--mode", "dense", "--cell", "lstm", *s]))
        for decay in args.decays:
            first.append((f"str-{decay:g}-s{seed}", ["--mode", "lowrank", "--threshold-decay", str(decay), *s]))
        for budget in args.target_params:
            first.append((f"str-params{budget}-s{seed}", ["--mode", "lowrank", "--target-params", str(budget), *s]))
        for decay in args.paper_decays:
            first.append((f"paper-{decay:g}-s{seed}",
                          ["--mode", "lowrank-paper", "--threshold-decay", str(decay), *s]))
        for strength in args.strengths:
            first.append((f"gmp-{strength:g}-s{seed}", ["--mode", "lowrank-gmp", "--strength", str(strength), *s]))
        first.append((f"dense-s{seed}", ["--mode", "dense", *s]))
    if args.report_only:
        write_report(out, sorted(p.parent for p in out.glob("*/summary.json")), TITLES[args.dataset])
        return

    stale = [f"{out / name}: {'; '.join(differ)}" for name, extra in first if (out / name / "summary.json").is_file()
             and (differ := stale_settings(out / name, base + extra))]
    if stale:
        raise SystemExit("finished runs in --out were made with other settings; delete them or pass another --out:\n"
                         + "\n".join(stale))

    def submit(pool, name, extra):
        def run():
            train_run(out / name, base + extra, out / "logs" / f"{name}.log")
            return out / name
        return pool.submit(run)

    runs, failures = [], []
    with ThreadPoolExecutor(args.jobs) as pool:
        pending = {submit(pool, name, extra): (name, extra) for name, extra in first}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                name, extra = pending.pop(future)
                try:
                    runs.append(future.result())
                except StaleRunError:
                    pool.shutdown(cancel_futures=True)
                    raise
                except RuntimeError as err:
                    failures.append(str(err))
                    print(f"FAILED {name}: {err}", file=sys.stderr, flush=True)
                    continue
                print(f"done {name}", flush=True)
                followers = [] if args.no_vanilla else [vanilla_twin(out / name, extra)]
                if not args.no_gmp:
                    followers.append(gmp_twin(out / name, extra))
                for follower in filter(None, followers):
                    discard_if_stale(out / follower[0], out / name, follower[1])
                    pending[submit(pool, *follower)] = follower
    write_report(out, runs, TITLES[args.dataset])
    if failures:
        raise SystemExit(f"{len(failures)} run(s) failed; the table holds the others:\n" + "\n".join(failures))


def data_dir_for(dataset: str, data_dir: str | None) -> Path:
    """The data folder of a ``--dataset`` run: ``--data-dir``, else the checkout's reference copy in
    ``../shared/data``, else (FSDD) strrnn's own FSDD folder (``$STRRNN_FSDD``, ``$STRRNN_DATA/fsdd``, the user
    data folder)."""
    if data_dir:
        return Path(data_dir)
    shared = REPO.parent / "shared" / "data" / ("fsdd" if dataset == "fsdd" else "speech_commands_sample")
    if dataset == "fsdd" and not shared.is_dir():
        from strrnn.data import dataset_dir

        return dataset_dir("fsdd")
    return shared


def missing_data(argv: list[str]) -> str | None:
    """What this benchmark, run with ``argv``, needs and does not find (``None``: the data is there).

    Read by ``benchmarks.suite`` to skip it on a checkout without the data.
    """
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--dataset", default="fsdd")
    parser.add_argument("--data-dir", default=None)
    args, _ = parser.parse_known_args(argv)
    folder = data_dir_for(args.dataset, args.data_dir)
    if args.dataset == "fsdd" and not (folder / "recordings").is_dir():
        return (f"needs FSDD (recordings/*.wav), not found at {folder}: pass --data-dir, set $STRRNN_FSDD or "
                "download it with `strrnn data download fsdd`")
    if args.dataset != "fsdd" and not folder.is_dir():
        return (f"needs a Speech Commands folder for {args.dataset}, not found at {folder}: pass --data-dir "
                "(see datasets/README.md)")
    return None


def discard_if_stale(twin: Path, source: Path, flags: list[str]) -> None:
    """A finished twin is reused only if it still matches its source run: a fixed-rank twin its ranks, a GMP twin
    its parameter budget (a retrained source may have learned others)."""
    if (twin / "summary.json").is_file() and stale_settings(twin, flags):
        print(f"{twin.name}: made for another result of {source.name}; retraining it", flush=True)
        (twin / "summary.json").unlink()
        (twin / "last.ckpt").unlink(missing_ok=True)


def load_summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


_KEEP = ("--cell", "--seed")


def _kept(flags: list[str]) -> list[str]:
    return [flag for i, flag in enumerate(flags) if flag in _KEEP or (i and flags[i - 1] in _KEEP)]


def vanilla_twin(run: Path, flags: list[str]) -> tuple[str, list[str]] | None:
    """Fixed-rank training from scratch at exactly the ranks a low-rank run ended with: same cell and seed, plain
    factors (``str-1-s0`` → ``fixed-str-1-s0``, ``gmpb-1-s0`` → ``fixed-gmpb-1-s0``). None for other runs."""
    if flags[flags.index("--mode") + 1] not in ("lowrank", "lowrank-paper", "lowrank-gmp"):
        return None
    return f"fixed-{run.name}", ["--mode", "fixed-rank", "--budget-from", str(run), *_kept(flags)]


def gmp_twin(run: Path, flags: list[str]) -> tuple[str, list[str]] | None:
    """Spectral GMP at the W,U parameters a learned STR run reached (``str-1-s0`` → ``gmpb-1-s0``): same cell and
    seed, ``--mode lowrank-gmp --target-params <its params>``. None for other runs."""
    if flags[flags.index("--mode") + 1] != "lowrank" or "str-" not in run.name:
        return None
    params = load_summary(run)["params_str"]
    return run.name.replace("str-", "gmpb-", 1), ["--mode", "lowrank-gmp", "--target-params", str(params),
                                                  *_kept(flags)]


TITLES = {"fsdd": "FSDD", "google12": "Speech Commands google12 (real clips)"}


def write_report(out: Path, runs: list[Path], data_title: str = "FSDD") -> None:
    """table.md (each method beside its fixed-rank twins, STR against GMP at its budget, then every group),
    table.csv, claims.json and the plot."""
    table = compare.compare(runs)
    groups = paired_groups(runs)
    markdown = (paired_table(groups) + "\n\n" + str_vs_gmp_table(groups) + "\n\nEvery group (runs are seeds of one "
                "row only when every setting but the seed matches):\n\n" + compare.to_markdown(table))
    (out / "table.md").write_text(markdown + "\n")
    table.to_csv(out / "table.csv", index=False)
    summaries = [load_summary(Path(r)) for r in runs]
    epochs = ", ".join(sorted({str(s["epochs"]) for s in summaries}))
    compare.plot(table[table["cell"] == "fastgrnn"], out / "accuracy_vs_params.png",
                 title=f"{data_title}, FastGRNN hidden 100, {epochs} epochs")
    print(markdown)
    result = claims(groups)
    (out / "claims.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


METHODS = {"dense": "full rank", "str": "STR, learned thresholds (lowrank)",
           "paper": "STR, the paper's recipe (lowrank-paper)", "gmpb": "spectral GMP at STR's budget (lowrank-gmp)",
           "gmp": "spectral GMP (lowrank-gmp)"}
_ORDER = list(METHODS)


def _stem(name: str) -> str:
    return name.rsplit("-s", 1)[0]


def _kind(stem: str) -> str:
    return stem.removeprefix("lstm-").split("-")[0]


def paired_groups(run_dirs) -> list[dict]:
    """Runs grouped over seeds by name (``str-1-s0``, ``str-1-s1`` → ``str-1``); each low-rank group carries its
    fixed-rank twins (``fixed-<run>``) and each ``gmpb`` group the STR group whose budget it matched.

    Returns dicts with ``stem``, ``kind`` (``dense``, ``str``, ``paper``, ``gmpb``, ``gmp``), ``cell``, ``knob``,
    ``runs`` (summaries by name, ordered by seed) and ``twins`` (``{run name: fixed-rank summary}``).
    """
    summaries = {Path(r).name: load_summary(Path(r)) for r in run_dirs}
    groups: dict[str, dict] = {}
    for name, s in sorted(summaries.items()):
        if name.startswith("fixed-"):
            continue
        stem = _stem(name)
        if _kind(stem) not in METHODS:
            continue
        group = groups.setdefault(stem, {"stem": stem, "kind": _kind(stem), "cell": s["cell"], "runs": {},
                                         "twins": {}})
        group["runs"][name] = s
        if f"fixed-{name}" in summaries:
            group["twins"][name] = summaries[f"fixed-{name}"]
    for group in groups.values():
        first = next(iter(group["runs"].values()))
        group["knob"] = (f"at {group['stem'].replace('gmpb-', 'str-', 1)}'s W,U params"
                         if group["kind"] == "gmpb" else first.get("strength"))
    return sorted(groups.values(), key=lambda g: (g["cell"] != "fastgrnn", g["cell"], _ORDER.index(g["kind"]),
                                                  str(g["knob"])))


def _pct(values: list[float]) -> tuple[float, float]:
    values = [100 * v for v in values]
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _stats(values: list[float]) -> str:
    return compare.mean_std(values, scale=100) if values else ""


def _ranks(s: dict) -> str:
    return "({},{})".format(*[s["ranks"][k] for k in sorted(s["ranks"], key=lambda k: k[-1] != "W")])


def paired_table(groups: list[dict]) -> str:
    """Each method per knob over seeds beside fixed-rank training from scratch at each seed's ranks (test
    accuracy %, mean ± std), with the paired gap on test and validation accuracy."""
    lines = ["| model | method | knob | ranks (W,U) per seed | W,U params (mean, % of dense) | its own run % | "
             "fixed-rank at its ranks, from scratch % | gap (test / val) | seeds |",
             "|---|---|---|---|---|---|---|---|---|"]
    for g in groups:
        runs = list(g["runs"].values())
        own = _stats([s["test_acc"] for s in runs])
        if g["kind"] == "dense":
            # a dense run has no low-rank tensors to count: the W,U size comes from a low-rank run of the same cell
            dense_wu = next((s["params_str_dense"] for h in groups if h["cell"] == g["cell"]
                             for s in h["runs"].values() if s.get("params_str_dense")), 0)
            lines.append(f"| {g['cell']} | full rank | | | {f'{dense_wu:,}' if dense_wu else ''} (100%) | {own} | | | "
                         f"{len(runs)} |")
            continue
        pct = statistics.mean(100 * s["params_str"] / s["params_str_dense"] for s in runs)
        params = statistics.mean(s["params_str"] for s in runs)
        paired = [(g["runs"][n], t) for n, t in g["twins"].items()]
        twin = f"{_stats([t['test_acc'] for _, t in paired])}" if paired else ""
        gap = ""
        if paired:
            test_gap = statistics.mean(100 * (s["test_acc"] - t["test_acc"]) for s, t in paired)
            val = [(s.get("best_val_acc"), t.get("best_val_acc")) for s, t in paired]
            val_gap = (statistics.mean(100 * (a - b) for a, b in val) if all(None not in v for v in val)
                       else float("nan"))
            gap = f"{test_gap:+.2f} / {val_gap:+.2f}"
        knob = f"{g['knob']:g}" if isinstance(g["knob"], float) else g["knob"]
        lines.append(f"| {g['cell']} | {METHODS[g['kind']]} | {knob} | {' '.join(_ranks(s) for s in runs)} "
                     f"| {params:,.0f} ({pct:.0f}%) | {own} | {twin} | {gap} | {len(runs)} ({len(paired)} twins) |")
    return "\n".join(lines)


def str_vs_gmp(groups: list[dict]) -> list[dict]:
    """Learned STR against spectral GMP at the same W,U parameters, seed by seed (each ``gmpb`` run matched the
    budget its ``str`` run of the same seed reached)."""
    by_stem = {g["stem"]: g for g in groups}
    rows = []
    for g in (g for g in groups if g["kind"] == "gmpb"):
        source = by_stem.get(g["stem"].replace("gmpb-", "str-", 1))
        if source is None:
            continue
        pairs = [(source["runs"][n.replace("gmpb-", "str-", 1)], s) for n, s in g["runs"].items()
                 if n.replace("gmpb-", "str-", 1) in source["runs"]]
        if not pairs:
            continue
        rows.append({"cell": g["cell"], "str": source["stem"], "seeds": len(pairs),
                     "params_pct": round(statistics.mean(100 * s["params_str"] / s["params_str_dense"]
                                                         for s, _ in pairs), 1),
                     "gmp_params_pct": round(statistics.mean(100 * t["params_str"] / t["params_str_dense"]
                                                             for _, t in pairs), 1),
                     "str_acc": round(_pct([s["test_acc"] for s, _ in pairs])[0], 2),
                     "gmp_acc": round(_pct([t["test_acc"] for _, t in pairs])[0], 2),
                     "gap": round(statistics.mean(100 * (s["test_acc"] - t["test_acc"]) for s, t in pairs), 2)})
    return rows


def str_vs_gmp_table(groups: list[dict]) -> str:
    """Markdown of :func:`str_vs_gmp`."""
    lines = ["Learned STR against spectral GMP at the same budget (GMP's --target-params = the W,U parameters each "
             "STR seed reached):", "",
             "| model | STR run | W,U params STR / GMP | STR % | spectral GMP % | STR − GMP (points) | seeds |",
             "|---|---|---|---|---|---|---|"]
    for r in str_vs_gmp(groups):
        lines.append(f"| {r['cell']} | {r['str']} | {r['params_pct']:.0f}% / {r['gmp_params_pct']:.0f}% | "
                     f"{r['str_acc']:.2f} | {r['gmp_acc']:.2f} | {r['gap']:+.2f} | {r['seeds']} |")
    return "\n".join(lines)


def claims(groups: list[dict]) -> dict:
    """The claims, judged per group (percent points, means over paired seeds):

    1. a method's own run is within 0.5 points of fixed-rank training from scratch at its ranks, or better;
    2. STR is within 0.5 points of full rank wherever it keeps at most 50% of the W,U parameters (the paper's);
    3. learned STR against spectral GMP at the same budget (reported, whichever wins).
    """
    full = {g["cell"]: _pct([s["test_acc"] for s in g["runs"].values()])[0] for g in groups if g["kind"] == "dense"}
    result = {"full_rank_acc": full, "vs_fixed_rank": [], "within_0.5_of_full_at_half_params": [],
              "str_vs_gmp_same_budget": str_vs_gmp(groups)}
    for g in (g for g in groups if g["kind"] != "dense"):
        runs = list(g["runs"].values())
        where = {"cell": g["cell"], "method": g["kind"], "group": g["stem"], "seeds": len(runs)}
        pct = statistics.mean(100 * s["params_str"] / s["params_str_dense"] for s in runs)
        own = _pct([s["test_acc"] for s in runs])[0]
        paired = [(g["runs"][n], t) for n, t in g["twins"].items()]
        if paired:
            gap = statistics.mean(100 * (s["test_acc"] - t["test_acc"]) for s, t in paired)
            result["vs_fixed_rank"].append({**where, "params_pct": round(pct, 1), "own": round(own, 2),
                                            "fixed_rank": round(_pct([t["test_acc"] for _, t in paired])[0], 2),
                                            "gap": round(gap, 2), "holds": gap >= -0.5})
        if pct <= 50 and g["cell"] in full and g["kind"] in ("str", "paper"):
            result["within_0.5_of_full_at_half_params"].append(
                {**where, "params_pct": round(pct, 1), "str": round(own, 2), "full": round(full[g["cell"]], 2),
                 "holds": own >= full[g["cell"]] - 0.5})
    return result


if __name__ == "__main__":
    main()
