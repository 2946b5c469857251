"""Deployment table of finished runs: flash, RAM, multiply-adds and microseconds per frame of the C export, test
accuracy of PyTorch, the C (fp32, int8) and the ONNX files (fp32, int8), and the ONNX files' sizes.

    python -m benchmarks.deploy_table runs/fsdd-dense runs/fsdd-lowrank          # -> results/deploy_table/
    python -m benchmarks.deploy_table RUN... --out /tmp/deploy --rounds 5        # a quick look
    python -m benchmarks.deploy_table RUN... --data-dir ../shared/data/fsdd      # the data set at another root

Per run folder (one written by ``strrnn train``; its data set must be there for the accuracies), two rows, fp32 and
int8 (per-row scales):

* flash bytes: :func:`strrnn.deploy.footprint` -- ``size -A`` of ``<prefix>_model.o`` compiled ``-std=c99 -O2``
  (``.text`` + ``.rodata`` + ``.data``; the host's instruction set, e.g. x86-64, not a microcontroller's);
* RAM bytes: the state struct + the deepest scratch (from the sizes);
* MACs / frame: the weight products of one ``step`` (the classifier, once per ``logits`` call, is not counted);
* µs / frame: ``<prefix>_step`` of every run and arithmetic compiled ``-O2`` into one harness
  (:func:`benchmarks.c_deploy.harness`): interleaved rounds, each contender stepping the same clips, order rotated;
  the median over rounds;
* test accuracy on the run's test split: PyTorch (the exported model), the C checker (``strrnn.deploy.run_c`` on the
  raw features: the C normalizes them itself) and the ONNX clip graphs (``strrnn.deploy.onnx_accuracy``);
* ONNX KB: the clip graph (a ``Scan``) and the step graph written by ``strrnn export --onnx --int8``.

Writes ``table.md`` and ``results.json`` (and the ONNX files, C sources under ``<out>/files/``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks import RESULTS
from benchmarks.c_deploy import harness
from strrnn.artifacts import check_label_set, exported_datamodule, load_exported
from strrnn.deploy import compile_c, footprint, run_c, write_c
from strrnn.deploy.c_source import _compiler
from strrnn.deploy.onnx_graph import export_onnx, onnx_accuracy
from strrnn.fileio import atomic_write_text

FLAGS = ("-std=c99", "-O2")
ARITHMETIC = (("fp32", False), ("int8", True))


def _test_split(run: Path, payload: dict, data_dir: str | None):
    """Raw test features (N, T, F), labels (N,) and the normalization of ``run``'s data set."""
    datamodule = exported_datamodule(payload, data_dir)
    datamodule.progress = False
    datamodule.setup("test")
    check_label_set(datamodule, payload)
    test = datamodule.test_set
    return np.asarray(test.features[test.index], np.float32), np.asarray(test.targets), payload.get("normalization")


def _describe(model, payload) -> str:
    cell = model.rnn.cells[0]
    ranks = [f"{n} {cell._parameters[f'{n}_left'].shape[1]}" for n in ("W", "U") if f"{n}_left" in cell._parameters]
    cfg = payload["config"]
    return (f"{cfg.get('dataset')} {cfg.get('mode')}: {cfg.get('cell')} hidden {cell.hidden_size}, "
            f"{'ranks ' + ', '.join(ranks) if ranks else 'full rank'}, pooling {model.pooling}, "
            f"{cfg.get('epochs')} epochs")


@torch.no_grad()
def measure_run(run: Path, files: Path, data_dir: str | None, scales: str) -> dict:
    """Sizes and accuracies of one run (everything but the timing)."""
    model, payload = load_exported(run)
    raw, labels, norm = _test_split(run, payload, data_dir)
    x = raw if norm is None else (raw - np.asarray(norm["mean"], np.float32).reshape(-1)) / \
        np.asarray(norm["std"], np.float32).reshape(-1)
    torch_acc = float((model(torch.from_numpy(x.astype(np.float32))).argmax(1).numpy() == labels).mean())
    onnx = export_onnx(run, files / f"{run.name}.onnx", int8=True, scales=scales)
    onnx_acc, _ = onnx_accuracy(run, {"fp32": onnx.onnx, "int8": onnx.int8}, data_dir)
    onnx_kb = {"fp32": (onnx.onnx.stat().st_size / 1024, onnx.step.stat().st_size / 1024),
               "int8": (onnx.int8.stat().st_size / 1024, onnx.int8_step.stat().st_size / 1024)}
    rows = {}
    for name, int8 in ARITHMETIC:
        folder = files / f"{run.name}-c-{name}"
        write_c(model, folder, payload=payload, int8=int8, scales=scales)
        got = run_c(compile_c(folder, flags=FLAGS), raw)
        size = footprint(model, payload=payload, int8=int8, scales=scales, flags=FLAGS)
        rows[name] = {"flash_bytes": size["flash_bytes"], "code_bytes": size["code_bytes"],
                      "ram_bytes": size["ram_bytes"], "state_bytes": size["state_bytes"],
                      "scratch_bytes": size["scratch_bytes"], "macs_per_frame": size["macs_per_frame"],
                      "c_acc": float((got.argmax(1) == labels).mean()), "onnx_acc": onnx_acc[name],
                      "onnx_kb": onnx_kb[name][0], "onnx_step_kb": onnx_kb[name][1]}
    return {"run": str(run), "name": run.name, "model": _describe(model, payload), "n_test": int(len(labels)),
            "torch_acc": torch_acc, "input_shape": list(payload["input_shape"]), "rows": rows,
            "payload": payload, "module": model}


def time_runs(measured: list[dict], rounds: int, warmup: int, clips: int, scales: str) -> dict[str, list[float]]:
    """Seconds per frame of every run's C step at fp32 and int8, one figure per round, from one harness per input
    shape (the harness steps all its contenders through the same frames)."""
    times: dict[str, list[float]] = {}
    shapes = sorted({tuple(m["input_shape"]) for m in measured})
    for shape in shapes:
        group = [m for m in measured if tuple(m["input_shape"]) == shape]
        with tempfile.TemporaryDirectory(prefix="strrnn-deploy-bench-") as folder:
            folder = Path(folder)
            keys, sources = [], []
            for i, m in enumerate(group):
                for name, int8 in ARITHMETIC:
                    key = f"r{i}_{name}"
                    written = write_c(m["module"], folder / key, payload=m["payload"], int8=int8, scales=scales,
                                      prefix=key)
                    keys.append(key)
                    sources.append(str(written["source"]))
            frames, features = shape
            (folder / "harness.c").write_text(harness(keys, features, frames, clips))
            exe = folder / "harness"
            argv = [*_compiler(None), *FLAGS, "-Wall", "-Werror", *[f"-I{folder / k}" for k in keys], "-o", str(exe),
                    str(folder / "harness.c"), *sources, "-lm"]
            subprocess.run(argv, check=True)
            out = subprocess.run([str(exe), str(rounds), str(warmup)], check=True, capture_output=True,
                                 text=True).stdout
        for line in out.splitlines():
            _, key, seconds = line.split()
            i, name = key[1:].split("_")
            times.setdefault(f"{group[int(i)]['name']}/{name}", []).append(float(seconds))
    return times


def markdown(measured: list[dict], times: dict, meta: dict) -> str:
    lines = [
        "# Deployment of keyword spotters: C and ONNX (benchmarks/deploy_table.py)",
        "",
        f"- date: {meta['date']}; machine: {meta['machine']}; compiler `{meta['compiler']}`, flags `{' '.join(FLAGS)}`",
        f"- command: `{meta['command']}`",
        f"- timing: `<prefix>_step` per frame, {meta['rounds']} interleaved rounds after {meta['warmup']} warm-up "
        f"rounds, {meta['clips']} clips per contender per round; median [inter-quartile range]",
        "- flash: `size -A` of the -O2 object (.text + .rodata + .data; host code, x86-64); RAM: state + deepest "
        "scratch; MACs: the weight products of one step (the classifier runs once per `logits` call); accuracy: "
        f"the run's test split; int8: {meta['scales']} weight scales, int8 x int8 -> int32",
        "",
    ]
    for m in measured:
        lines.append(f"- `{m['name']}`: {m['model']}; {m['n_test']} test clips")
    lines += ["", "| run | arithmetic | flash B | RAM B | MACs / frame | µs / frame | test acc. % PyTorch | C | ONNX "
              "| ONNX file KB (clip / step) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for m in measured:
        for name, _ in ARITHMETIC:
            r = m["rows"][name]
            values = sorted(times[f"{m['name']}/{name}"])
            q = statistics.quantiles(values, n=4) if len(values) >= 4 else [values[0], 0, values[-1]]
            torch_acc = f"{100 * m['torch_acc']:.2f}" if name == "fp32" else ""
            lines.append(f"| {m['name']} | {name} | {r['flash_bytes']:,} | {r['ram_bytes']:,} | "
                         f"{r['macs_per_frame']:,} | {statistics.median(values) * 1e6:.2f} [{q[0] * 1e6:.2f}-"
                         f"{q[2] * 1e6:.2f}] | {torch_acc} | {100 * r['c_acc']:.2f} | {100 * r['onnx_acc']:.2f} | "
                         f"{r['onnx_kb']:.1f} / {r['onnx_step_kb']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="finished run folders (recurrent keyword spotters)")
    ap.add_argument("--out", type=Path, default=RESULTS / "deploy_table", help="results folder (default: %(default)s)")
    ap.add_argument("--data-dir", default=None, help="dataset root for the accuracies (default: each run's)")
    ap.add_argument("--scales", choices=("row", "tensor"), default="row", help="int8 weight scales (default: row)")
    ap.add_argument("--rounds", type=int, default=30, help="timed rounds (default: 30)")
    ap.add_argument("--clips", type=int, default=10, help="clips per contender per round (default: 10)")
    args = ap.parse_args(argv)
    try:
        compiler = shlex.join(_compiler(None))
    except ValueError as err:
        ap.error(str(err))
    names = [run.name for run in args.runs]
    if len(set(names)) != len(names):
        ap.error(f"run folders need distinct names (they name the rows and files): {names}")
    files = args.out / "files"
    files.mkdir(parents=True, exist_ok=True)
    measured = [measure_run(run, files, args.data_dir, args.scales) for run in args.runs]
    warmup = 3
    times = time_runs(measured, args.rounds, warmup, args.clips, args.scales)
    version = subprocess.run([*_compiler(None), "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    meta = {"date": datetime.datetime.now().isoformat(timespec="minutes"),
            "machine": f"{platform.machine()}, {platform.platform()}", "compiler": f"{compiler} ({version})",
            "command": "python -m benchmarks.deploy_table " + shlex.join(argv if argv is not None else sys.argv[1:]),
            "rounds": args.rounds, "warmup": warmup, "clips": args.clips,
            "scales": "per-row" if args.scales == "row" else "per-matrix"}
    text = markdown(measured, times, meta)
    atomic_write_text(args.out / "table.md", text)
    public = [{k: v for k, v in m.items() if k not in ("payload", "module")} for m in measured]
    atomic_write_text(args.out / "results.json", json.dumps({"meta": meta, "runs": public, "times": times}, indent=1)
                      + "\n")
    print(text)
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
