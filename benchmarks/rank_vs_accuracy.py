"""Rank vs accuracy on real speech, through the training CLI — the paper's central RNN claim, tested.

    python -m benchmarks.rank_vs_accuracy [--epochs 300] [--seeds 0 1 2] [--jobs 2] [--quick | --report-only]
    python -m benchmarks.rank_vs_accuracy --dataset google12 --data-dir ../shared/data/speech_commands_sample

Data: FSDD by default (``../shared/data/fsdd``, else strrnn's FSDD folder: ``$STRRNN_FSDD`` or the user data
folder, where ``strrnn data download fsdd`` puts it); ``--dataset google12`` with a Speech Commands folder
(full archive or test-set layout) trains with that data set's recipe (``strrnn.train.DATASET_DEFAULTS``) and writes
under ``benchmarks/results/speech_commands_sample/<epochs>ep`` unless ``--out`` says otherwise.

Runs (FastGRNN hidden 100, 32 log-mel × 99 frames, batch 100), each over every seed:

1. full rank (``--mode dense``);
2. STR low-rank (``strrnn.RankSchedule``) at several strengths;
3. fixed-rank ("vanilla") training from scratch at exactly the ranks each STR run ended with, plain factors A·B
   (``--mode fixed-rank --budget-from <STR run>``), started as soon as that STR run finishes;
4. one LSTM comparison: LSTM dense, LSTM + STR at the strongest strength, and its fixed-rank twin.

Every run is a ``python -m strrnn.train`` process at one thread (small recurrent models train fastest that way);
``--jobs`` of them run side by side. A finished run is reused only if it was made with the same settings (see
``benchmarks/runner.py``), so an interrupted suite resumes and a folder never mixes settings. Writes ``<out>/table.md``
(STR beside its fixed-rank twins, mean ± std over seeds), ``<out>/table.csv``, ``<out>/claims.json`` (the paper's
two claims, judged) and ``<out>/accuracy_vs_params.png``.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="fsdd", choices=["fsdd", "google12"])
    parser.add_argument("--data-dir", default=None,
                        help="default: ../shared/data/fsdd, else $STRRNN_FSDD or the user data folder's fsdd (fsdd); "
                             "../shared/data/speech_commands_sample (google12)")
    parser.add_argument("--out", default=None,
                        help="results folder (default: benchmarks/results/rank_vs_accuracy/<epochs>ep; "
                             "--quick: benchmarks/results/rank_vs_accuracy/quick)")
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--strengths", type=float, nargs="+", default=[0.6, 0.8],
                        help="--strength of the STR runs (fraction of each matrix's largest singular value)")
    parser.add_argument("--target-params", type=int, nargs="*", default=[],
                        help="budget-control STR runs (--target-params N) beside the strengths, each with its "
                             "fixed-rank twin (named str-params<N>-s<seed>)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--no-lstm", action="store_true")
    parser.add_argument("--lstm-strength", type=float, default=None,
                        help="strength of the LSTM + STR run (default: the strongest of --strengths)")
    parser.add_argument("--no-vanilla", action="store_true", help="skip the fixed-rank runs at STR's ranks")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run of the whole pipeline: 5 epochs, one seed, one strength")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: tabulate every finished run folder already in --out")
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.seeds, args.strengths = 5, [0], [0.7]
    data_dir = str(data_dir_for(args.dataset, args.data_dir))
    if (missing := missing_data(["--dataset", args.dataset, "--data-dir", data_dir])) is not None:
        raise SystemExit(missing)
    results = RESULTS / ("rank_vs_accuracy" if args.dataset == "fsdd" else "speech_commands_sample")
    out = Path(args.out or (results / "quick" if args.quick else results / f"{args.epochs}ep"))
    (out / "logs").mkdir(parents=True, exist_ok=True)
    base = ["--dataset", args.dataset, "--data-dir", data_dir, "--epochs", str(args.epochs), "--hidden-size", "100",
            "--batch-size", "100", "--weight-decay", "1e-3"]
    lstm_strength = args.strengths[-1] if args.lstm_strength is None else args.lstm_strength

    first: list[tuple[str, list[str]]] = []  # (run name, flags); per seed the LSTM runs, the slowest, go first
    for seed in args.seeds:
        s = ["--seed", str(seed)]
        if not args.no_lstm:
            first.append((f"lstm-str-{lstm_strength:g}-s{seed}",
                          ["--mode", "lowrank", "--cell", "lstm", "--strength", str(lstm_strength), *s]))
            first.append((f"lstm-dense-s{seed}", ["--mode", "dense", "--cell", "lstm", *s]))
        for strength in args.strengths:
            first.append((f"str-{strength:g}-s{seed}", ["--mode", "lowrank", "--strength", str(strength), *s]))
        for budget in args.target_params:
            first.append((f"str-params{budget}-s{seed}", ["--mode", "lowrank", "--target-params", str(budget), *s]))
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
                if not args.no_vanilla and (twin := vanilla_twin(out / name, extra)):
                    discard_if_stale(out / twin[0], out / name)
                    pending[submit(pool, *twin)] = twin
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


def discard_if_stale(twin: Path, str_run: Path) -> None:
    """A finished fixed-rank twin is reused only if it trained at the ranks its STR run (re)learned."""
    summary = twin / "summary.json"
    if summary.is_file() and load_summary(twin)["ranks"] != load_summary(str_run)["ranks"]:
        print(f"{twin.name}: trained at other ranks than {str_run.name} now has; retraining it", flush=True)
        summary.unlink()
        (twin / "last.ckpt").unlink(missing_ok=True)


def load_summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def vanilla_twin(run: Path, flags: list[str]) -> tuple[str, list[str]] | None:
    """Fixed-rank training from scratch at exactly the ranks the STR run ``run`` ended with: same cell and seed,
    plain factors (``str-0.5-s0`` → ``vanilla-0.5-s0``, ``lstm-str-0.7-s0`` → ``lstm-vanilla-0.7-s0``)."""
    if "-str-" not in f"-{run.name}":
        return None
    keep = [flag for i, flag in enumerate(flags)
            if flag in ("--cell", "--factors", "--seed") or (i and flags[i - 1] in ("--cell", "--factors", "--seed"))]
    return run.name.replace("str-", "vanilla-", 1), ["--mode", "fixed-rank", "--budget-from", str(run), *keep]


TITLES = {"fsdd": "FSDD", "google12": "Speech Commands google12 (real clips)"}


def write_report(out: Path, runs: list[Path], data_title: str = "FSDD") -> None:
    """table.md (paired STR vs fixed-rank, then every group), table.csv, claims.json and the plot."""
    table = compare.compare(runs)
    groups = paired_groups(runs)
    every_group = compare.to_markdown(table)
    markdown = (paired_table(groups) + "\n\nEvery group (runs are seeds of one row only when every setting but the "
                "seed matches):\n\n" + every_group)
    (out / "table.md").write_text(markdown + "\n")
    table.to_csv(out / "table.csv", index=False)
    summaries = [load_summary(Path(r)) for r in runs]
    epochs = ", ".join(sorted({str(s["epochs"]) for s in summaries}))
    factors = " and ".join(sorted({s["factors"] for s in summaries if s["mode"] == "lowrank"}))
    compare.plot(table[table["cell"] == "fastgrnn"], out / "accuracy_vs_params.png",
                 title=f"{data_title}, FastGRNN hidden 100, {epochs} epochs (STR: {factors} factors)")
    print(markdown)
    result = claims(groups)
    (out / "claims.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def paired_groups(run_dirs) -> list[dict]:
    """Runs grouped by (cell, kind, factors, strength) over seeds; each STR group carries its fixed-rank twins.

    Returns dicts with ``cell``, ``kind`` ("dense" or "str"), ``factors``, ``strength``, ``runs`` (summaries,
    by seed) and, for STR groups, ``vanilla`` (the summaries of the twins that finished).
    """
    summaries = {Path(r).name: load_summary(Path(r)) for r in run_dirs}
    groups: dict[tuple, dict] = {}
    for name, s in sorted(summaries.items()):
        if s["mode"] == "dense":
            key = (s["cell"], "dense", "", 0.0)
        elif s["mode"] == "lowrank":
            key = (s["cell"], "str", s["factors"], s.get("strength", s["threshold_decay"]))
        else:
            continue
        group = groups.setdefault(key, dict(zip(("cell", "kind", "factors", "strength"), key), runs=[], vanilla=[]))
        group["runs"].append(s)
        if (twin := name.replace("str-", "vanilla-", 1)) in summaries and s["mode"] == "lowrank":
            group["vanilla"].append(summaries[twin])
    # budgets ("6600 params") after strengths
    return [groups[k] for k in sorted(groups, key=lambda k: (k[0] != "fastgrnn", k[:3], str(type(k[3])), k[3]))]


def _mean_std(values: list[float]) -> tuple[float, float]:
    values = [100 * v for v in values]
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def paired_table(groups: list[dict]) -> str:
    """STR per (cell, factors, strength) over seeds beside fixed-rank training from scratch at each seed's ranks."""
    def stats(summaries):
        return "{:.2f} ± {:.2f}".format(*_mean_std([s["test_acc"] for s in summaries]))

    lines = ["| model | strength | ranks (W,U) per seed | W,U params (mean % of dense) | STR test acc % | "
             "fixed-rank at STR's ranks, from scratch % | seeds |", "|---|---|---|---|---|---|---|"]
    for g in groups:
        runs = g["runs"]
        if g["kind"] == "dense":
            lines.append(f"| {g['cell']} full rank | | | {runs[0]['params_dense']:,} model params | {stats(runs)} | | "
                         f"{len(runs)} |")
            continue
        ranks = " ".join("({},{})".format(*[s["ranks"][k] for k in sorted(s["ranks"], key=lambda k: k[-1] != "W")])
                         for s in runs)
        pct = statistics.mean(100 * s["params_str"] / s["params_str_dense"] for s in runs)
        params = statistics.mean(s["params_str"] for s in runs)
        vanilla = f"{stats(g['vanilla'])} ({len(g['vanilla'])} seeds)" if g["vanilla"] else ""
        knob = f"{g['strength']:g}" if isinstance(g["strength"], float) else g["strength"]
        lines.append(f"| {g['cell']} STR {g['factors']} | {knob} | {ranks} | {params:,.0f} ({pct:.0f}%) "
                     f"| {stats(runs)} | {vanilla} | {len(runs)} |")
    return "\n".join(lines)


def claims(groups: list[dict]) -> dict:
    """The paper's two claims (§4.2), checked per STR group against its own cell's full rank (percent).

    1. STR is at least as accurate as fixed-rank training at the same ranks (mean over paired seeds);
    2. STR is within 0.5 points of full rank wherever it keeps at most 50% of the W, U parameters.
    """
    full = {g["cell"]: _mean_std([s["test_acc"] for s in g["runs"]])[0] for g in groups if g["kind"] == "dense"}
    result = {"full_rank_acc": full, "str_vs_fixed_rank": [], "within_0.5_of_full_at_half_params": []}
    for g in (g for g in groups if g["kind"] == "str"):
        where = {"cell": g["cell"], "factors": g["factors"], "strength": g["strength"], "seeds": len(g["runs"])}
        str_acc = _mean_std([s["test_acc"] for s in g["runs"]])[0]
        if g["vanilla"]:
            vanilla = _mean_std([s["test_acc"] for s in g["vanilla"]])[0]
            result["str_vs_fixed_rank"].append({**where, "str": round(str_acc, 2), "fixed_rank": round(vanilla, 2),
                                                "holds": str_acc >= vanilla})
        pct = statistics.mean(100 * s["params_str"] / s["params_str_dense"] for s in g["runs"])
        if pct <= 50 and g["cell"] in full:
            result["within_0.5_of_full_at_half_params"].append(
                {**where, "params_pct": round(pct, 1), "str": round(str_acc, 2), "full": round(full[g["cell"]], 2),
                 "holds": str_acc >= full[g["cell"]] - 0.5})
    return result


if __name__ == "__main__":
    main()
