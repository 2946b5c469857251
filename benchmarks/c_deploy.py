"""C deployment (``strrnn.deploy.write_c``) of a dense and a low-rank keyword spotter, side by side: flash, RAM,
multiply-adds and microseconds per frame of the generated C step.

    python -m benchmarks.c_deploy                       # FastGRNN hidden 100 on FSDD's shape 99 x 32, ranks (13, 23)
    python -m benchmarks.c_deploy --quick               # smoke test: 5 rounds, written under results/c_deploy/quick
    python -m benchmarks.c_deploy --dense RUN_A --lowrank RUN_B   # the exported models of two finished runs
    python -m benchmarks.c_deploy --clock thread --tag thread-clock   # CPU time of the timing thread (loaded machine)

Models: without run folders, two spotters built in-process with the same seed -- the full-rank FastGRNN (hidden
100, 32 features x 99 frames, 10 classes, last-state pooling) and the same model factorized at ``--ranks`` (rank of
W, rank of U; default (13, 23), the ranks STR learns on FSDD at 50% of W,U) through ``strrnn.lowrank_rnn(...,
threshold=False)`` and ``strrnn.export``. Weights are random: sizes and speed do not depend on their values.

Measured, for each model at fp32 and int8 (per-row scales):

* flash bytes: ``strrnn.deploy.footprint`` -- ``size -A`` of ``<prefix>_model.o`` (code + const data; the host's
  instruction set, see the machine line of the table), compiled ``-O2`` (the build that is timed) and ``-Os``
  (what a flash-bound device build would use);
* RAM bytes: the state struct + the deepest scratch, from the sizes;
* multiply-adds per frame: the weight products of one step;
* µs per frame of ``<prefix>_step``: every contender is compiled ``-O2`` into one timing harness (generated here);
  each round steps every contender through the same clips, order rotated each round and reversed every other
  round; ratios are medians of per-round ratios (the only stable figure on a shared machine).

Targets: low-rank / dense C time <= 1.15 x their multiply-add ratio; int8 flash <= 0.3 x fp32 flash; the
low-rank model at int8 fits in 16 KB of flash. Before timing, every contender's checker is run on random clips and
its logits compared with PyTorch's (the largest difference is in the table).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

import strrnn
from benchmarks import RESULTS, command_line
from strrnn.deploy import compile_c, footprint, run_c, write_c
from strrnn.deploy.c_source import _compiler  # the same compiler resolution as the library
from strrnn.factored import factored_is_cheaper
from strrnn.fileio import atomic_write_text
from strrnn.models import KeywordSpotter

T, I, H, C = 99, 32, 100, 10
DEFAULT_RANKS = (13, 23)
SLACK = 1.15  # time ratio allowed per unit of multiply-add ratio
INT8_FLASH_TARGET = 0.3
FLASH_BUDGET = 16 * 1024
FLAGS = ("-std=c99", "-O2")
SIZE_FLAGS = ("-std=c99", "-Os")
CONTENDERS = [("dense", False), ("lowrank", False), ("dense", True), ("lowrank", True)]


def build_models(ranks: tuple[int, int]):
    """``{"dense": (model, payload), "lowrank": (model, payload)}``: exported spotters built with the same seed."""
    payload = {"input_shape": [T, I], "class_names": [str(d) for d in range(C)],
               # a normalization like a run's (its values do not change the cost): the C normalizes every frame
               "normalization": {"mean": np.linspace(-8, -2, I).tolist(), "std": np.linspace(1, 3, I).tolist()}}
    torch.manual_seed(0)
    dense = strrnn.export(KeywordSpotter(n_features=I, n_classes=C, hidden_size=H)).eval()
    torch.manual_seed(0)
    model = KeywordSpotter(n_features=I, n_classes=C, hidden_size=H)
    strrnn.lowrank_rnn(model, max_rank={"W": ranks[0], "U": ranks[1]}, threshold=False)
    lowrank = strrnn.export(model).eval()
    cell = lowrank.rnn.cells[0]
    for name, rank in zip(("W", "U"), ranks, strict=True):
        left = cell._parameters.get(f"{name}_left")
        if left is None or left.shape[1] != rank:
            raise RuntimeError(f"export did not keep {name} as rank-{rank} factors")
    return {"dense": (dense, payload), "lowrank": (lowrank, payload)}


def load_runs(dense_run: Path, lowrank_run: Path):
    from strrnn.artifacts import load_exported

    return {"dense": load_exported(dense_run), "lowrank": load_exported(lowrank_run)}


def _key(name: str, int8: bool) -> str:
    return f"{name}_{'int8' if int8 else 'fp32'}"


def harness(keys: list[str], features: int, frames: int, clips: int) -> str:
    """A C timing harness over every contender (``<key>_model.h`` each): ``./harness ROUNDS WARMUP``, one line
    ``round key seconds_per_frame`` per timed block."""
    includes = "".join(f'#include "{k}_model.h"\n' for k in keys)
    runners = "".join(f"""
static double run_{k}(void)
{{
    {k}_state s;
    int c, t;
    double start = now();
    for (c = 0; c < CLIPS; ++c) {{
        {k}_init(&s);
        for (t = 0; t < FRAMES_PER_CLIP; ++t)
            {k}_step(&s, input[t]);
        sink += s.h[0][0]; /* consume the state: nothing may be optimized away */
    }}
    return (now() - start) / ((double)CLIPS * FRAMES_PER_CLIP);
}}
""" for k in keys)
    table = ", ".join(f"run_{k}" for k in keys)
    names = ", ".join(f'"{k}"' for k in keys)
    return f"""\
#define _POSIX_C_SOURCE 199309L /* clock_gettime under -std=c99 */
#define STRRNN_NO_SHORT_NAMES
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
{includes}
#ifndef CLOCK_ID
#define CLOCK_ID CLOCK_MONOTONIC
#endif
#define FRAMES_PER_CLIP {frames}
#define CLIPS {clips}
#define N {len(keys)}

static float input[FRAMES_PER_CLIP][{features}];
static volatile float sink;

static double now(void)
{{
    struct timespec ts;
    clock_gettime(CLOCK_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}}
{runners}
typedef double (*runner)(void);
static const runner runners[N] = {{{table}}};
static const char *const names[N] = {{{names}}};

int main(int argc, char **argv)
{{
    int rounds = argc > 1 ? atoi(argv[1]) : 30, warmup = argc > 2 ? atoi(argv[2]) : 3;
    unsigned long x = 12345;
    int r, k, t, f;
    for (t = 0; t < FRAMES_PER_CLIP; ++t) /* deterministic frames, uniform in [-10, 0] like log-mel energies */
        for (f = 0; f < {features}; ++f) {{
            x = x * 1103515245UL + 12345UL;
            input[t][f] = -10.0f * (float)((x >> 8) & 0xFFFF) / 65535.0f;
        }}
    for (r = 0; r < warmup; ++r)
        for (k = 0; k < N; ++k)
            runners[k]();
    for (r = 0; r < rounds; ++r) {{
        int order[N];
        for (k = 0; k < N; ++k) /* rotated by the round, reversed on odd rounds */
            order[k] = (r % 2 ? N - 1 - k + r : k + r) % N;
        for (k = 0; k < N; ++k)
            printf("%d %s %.9g\\n", r, names[order[k]], runners[order[k]]());
    }}
    return sink == 12345.0f; /* never: keeps sink live */
}}
"""


def time_steps(models: dict, rounds: int, warmup: int, clips: int, clock: str, scales: str = "row",
               cc=None) -> dict[str, list[float]]:
    """Seconds per frame of ``<key>_step``, one figure per round, for every contender."""
    keys = [_key(n, q) for n, q in CONTENDERS]
    with tempfile.TemporaryDirectory(prefix="strrnn-c-bench-") as folder:
        folder = Path(folder)
        sources = []
        for name, int8 in CONTENDERS:
            model, payload = models[name]
            key = _key(name, int8)
            written = write_c(model, folder / key, payload=payload, int8=int8, scales=scales, prefix=key)
            sources.append(str(written["source"]))
        frames, features = models["dense"][1]["input_shape"]
        (folder / "harness.c").write_text(harness(keys, features, frames, clips))
        exe = folder / "harness"
        clock_id = ["-DCLOCK_ID=CLOCK_THREAD_CPUTIME_ID"] if clock == "thread" else []
        includes = [f"-I{folder / k}" for k in keys]
        argv = [*_compiler(cc), *FLAGS, "-Wall", "-Werror", *clock_id, *includes, "-o", str(exe),
                str(folder / "harness.c"), *sources, "-lm"]
        subprocess.run(argv, check=True)
        out = subprocess.run([str(exe), str(rounds), str(warmup)], check=True, capture_output=True, text=True).stdout
    times: dict[str, list[float]] = {k: [] for k in keys}
    for line in out.splitlines():
        _, key, seconds = line.split()
        times[key].append(float(seconds))
    return times


def check_outputs(models: dict, scales: str = "row", clips: int = 4) -> dict[str, float]:
    """Largest |logit difference| between each contender's C checker and PyTorch on random raw clips."""
    worst = {}
    generator = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="strrnn-c-check-") as folder:
        for name, int8 in CONTENDERS:
            model, payload = models[name]
            frames, features = payload["input_shape"]
            raw = generator.uniform(-10, 0, (clips, frames, features)).astype(np.float32)
            norm = payload.get("normalization")
            x = raw if norm is None else (raw - np.asarray(norm["mean"], np.float32)) / np.asarray(norm["std"],
                                                                                                   np.float32)
            with torch.no_grad():
                expected = model(torch.from_numpy(x.astype(np.float32))).numpy()
            key = _key(name, int8)
            write_c(model, Path(folder) / key, payload=payload, int8=int8, scales=scales)
            got = run_c(compile_c(Path(folder) / key), raw)
            worst[key] = float(np.abs(got - expected).max())
    return worst


def _stats(values: list[float]) -> tuple[float, float, float]:
    values = sorted(values)
    q = statistics.quantiles(values, n=4) if len(values) >= 4 else [values[0], statistics.median(values), values[-1]]
    return statistics.median(values), q[0], q[2]


def measure(models: dict, rounds: int, warmup: int, clips: int, clock: str, scales: str = "row") -> dict:
    def sizes_at(flags):
        return {_key(n, q): footprint(models[n][0], payload=models[n][1], int8=q, scales=scales, flags=flags)
                for n, q in CONTENDERS}

    sizes, size_os = sizes_at(FLAGS), sizes_at(SIZE_FLAGS)
    errors = check_outputs(models, scales)
    times = time_steps(models, rounds, warmup, clips, clock, scales)
    result = {"sizes": sizes, "sizes_os": size_os, "errors": errors, "times": times, "ratios": {}, "targets": {}}
    for int8 in (False, True):
        lo, de = _key("lowrank", int8), _key("dense", int8)
        per_round = [a / b for a, b in zip(times[lo], times[de], strict=True)]
        mac_ratio = sizes[lo]["macs_per_frame"] / sizes[de]["macs_per_frame"]
        med, q1, q3 = _stats(per_round)
        result["ratios"][lo] = {"time_ratio": med, "iqr": [q1, q3], "mac_ratio": mac_ratio,
                                "target": SLACK * mac_ratio, "met": med <= SLACK * mac_ratio,
                                "time_over_mac_ratio": med / mac_ratio}
    for build, table in (("-O2", sizes), ("-Os", size_os)):
        for name in ("dense", "lowrank"):
            ratio = table[_key(name, True)]["flash_bytes"] / table[_key(name, False)]["flash_bytes"]
            result["targets"][f"{name} int8 / fp32 flash ({build})"] = {
                "value": ratio, "target": INT8_FLASH_TARGET, "met": ratio <= INT8_FLASH_TARGET}
        flash = table[_key("lowrank", True)]["flash_bytes"]
        result["targets"][f"lowrank int8 flash ({build})"] = {"value": flash, "target": FLASH_BUDGET,
                                                              "met": flash <= FLASH_BUDGET}
    return result


def markdown(result: dict, describe: dict, rounds: int, warmup: int, clips: int, clock: str, command: str) -> str:
    sizes, times = result["sizes"], result["times"]
    cc = " ".join(_compiler(None))
    version = subprocess.run([*_compiler(None), "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    lines = [
        "# C deployment of keyword spotters: dense vs low rank (strrnn.deploy.write_c)",
        "",
        f"- date: {datetime.datetime.now().isoformat(timespec='minutes')}",
        f"- machine: {platform.machine()}, {platform.platform()}; compiler `{cc}` ({version}), flags "
        f"`{' '.join(FLAGS)}`",
        f"- command: `{command}`",
        f"- models: {describe['dense']}; {describe['lowrank']}; int8: {describe['scales']} weight scales",
        f"- timing: `<prefix>_step` per frame, {rounds} interleaved rounds after {warmup} warm-up rounds, each "
        f"contender {clips} clips x {describe['frames']} frames per round; clock: {clock}. Ratios: medians of "
        "per-round ratios [inter-quartile range].",
        "- flash: `size -A` of `<prefix>_model.o` (.text + .rodata + .data; x86-64 code, larger than Thumb-2); RAM: "
        "state + deepest scratch, from the sizes; MACs: the weight products of one step (the classifier runs "
        "once per `logits` call and is not counted).",
        "",
        "| model | arithmetic | flash B -O2 (code + const) | flash B -Os (code + const) | RAM B (state + scratch) "
        "| MACs / frame | µs / frame, median [IQR] | max \\|C - PyTorch\\| |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, int8 in CONTENDERS:
        key = _key(name, int8)
        s, o = sizes[key], result["sizes_os"][key]
        med, q1, q3 = _stats(times[key])
        lines.append(f"| {name} | {'int8' if int8 else 'fp32'} | {s['flash_bytes']:,} ({s['code_bytes']:,} + "
                     f"{s['rodata_bytes'] + s['data_bytes']:,}) | {o['flash_bytes']:,} ({o['code_bytes']:,} + "
                     f"{o['rodata_bytes'] + o['data_bytes']:,}) | {s['ram_bytes']:,} ({s['state_bytes']} + "
                     f"{s['scratch_bytes']}) | {s['macs_per_frame']:,} | {med * 1e6:.2f} [{q1 * 1e6:.2f}-"
                     f"{q3 * 1e6:.2f}] | {result['errors'][key]:.1e} |")
    lines += ["", "## Targets", "", "| what | value | target | met |", "|---|---|---|---|"]
    for key, r in result["ratios"].items():
        met = "yes" if r["met"] else f"**no** (+{(r['time_ratio'] / r['target'] - 1) * 100:.0f}%)"
        lines.append(f"| low-rank / dense C time, {key.split('_')[1]} | {r['time_ratio']:.3f} "
                     f"[{r['iqr'][0]:.3f}-{r['iqr'][1]:.3f}] = {r['time_over_mac_ratio']:.2f} x MAC ratio "
                     f"{r['mac_ratio']:.3f} | <= {SLACK} x {r['mac_ratio']:.3f} = {r['target']:.3f} | {met} |")
    for what, t in result["targets"].items():
        value = f"{t['value']:,} B" if isinstance(t["value"], int) else f"{t['value']:.4f}"
        target = f"{t['target']:,} B" if isinstance(t["target"], int) else f"<= {t['target']}"
        lines.append(f"| {what} | {value} | {target} | {'yes' if t['met'] else '**no**'} |")
    return "\n".join(lines) + "\n"


def _describe(model, payload) -> str:
    cell = model.rnn.cells[0]
    ranks = [f"{n} rank {cell._parameters[f'{n}_left'].shape[1]}" for n in ("W", "U") if f"{n}_left" in
             cell._parameters]
    return (f"{type(cell).__name__} {cell.input_size}->{cell.hidden_size} x {model.rnn.num_layers} layer(s), "
            f"{len(payload['class_names'])} classes, pooling {model.pooling}, {', '.join(ranks) or 'full rank'}")


def parse_ranks(text: str) -> tuple[int, int]:
    try:
        w, u = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected RANK_W,RANK_U (e.g. 13,23), got {text!r}") from None
    if not (w > 0 and u > 0 and factored_is_cheaper(H, I, w) and factored_is_cheaper(H, H, u)):
        raise argparse.ArgumentTypeError(f"ranks must be positive and small enough to be stored as factors "
                                         f"(r (out + in) < out in: W <= 24, U <= 49), got {text}")
    return w, u


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="5 rounds, 2 clips per block (smoke test; not for quoting)")
    ap.add_argument("--dense", type=Path, default=None, help="run folder of the dense model (with --lowrank)")
    ap.add_argument("--lowrank", type=Path, default=None, help="run folder of the low-rank model (with --dense)")
    ap.add_argument("--ranks", type=parse_ranks, default=DEFAULT_RANKS, metavar="RW,RU",
                    help="ranks of the in-process low-rank model (default: 13,23)")
    ap.add_argument("--rounds", type=int, default=None, help="measured rounds (default 30; --quick: 5)")
    ap.add_argument("--clips", type=int, default=None, help="clips per contender per round (default 10; --quick: 2)")
    ap.add_argument("--scales", choices=("row", "tensor"), default="row",
                    help="int8 weight scales: one per row (default) or one per matrix")
    ap.add_argument("--clock", choices=("wall", "thread"), default="wall",
                    help="wall time (default), or the timing thread's CPU time (leaves out time taken by other jobs)")
    ap.add_argument("--out", type=Path, default=None,
                    help="results folder (default results/c_deploy; --quick: results/c_deploy/quick)")
    ap.add_argument("--tag", default=None,
                    help="write table-TAG.md and results-TAG.json instead of table.md and results.json (a variant "
                         "kept beside the default run: result subfolders are not committed)")
    args = ap.parse_args(argv)
    if (args.dense is None) != (args.lowrank is None):
        ap.error("give both --dense and --lowrank run folders, or neither (models built in-process)")
    try:
        _compiler(None)
    except ValueError as err:
        ap.error(str(err))
    rounds = args.rounds or (5 if args.quick else 30)
    clips = args.clips or (2 if args.quick else 10)
    warmup = 2 if args.quick else 3
    out = args.out or (RESULTS / "c_deploy" / ("quick" if args.quick else ""))
    models = load_runs(args.dense, args.lowrank) if args.dense else build_models(args.ranks)
    describe = {name: _describe(*models[name]) for name in models}
    describe["frames"] = models["dense"][1]["input_shape"][0]
    describe["scales"] = "per-row" if args.scales == "row" else "per-matrix"
    result = measure(models, rounds, warmup, clips, args.clock, args.scales)
    command = command_line("benchmarks.c_deploy", argv if argv is not None else sys.argv[1:])
    text = markdown(result, describe, rounds, warmup, clips, args.clock, command.strip())
    out.mkdir(parents=True, exist_ok=True)
    suffix = f"-{args.tag}" if args.tag else ""
    atomic_write_text(out / f"table{suffix}.md", text)
    payload = {**result, "models": describe, "command": command}
    atomic_write_text(out / f"results{suffix}.json", json.dumps(payload, indent=1, default=str) + "\n")
    print(text)
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
