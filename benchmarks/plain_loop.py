"""The README's plain-PyTorch recipe on FSDD, beside the CLI: does a user's own loop get the CLI's accuracy?

    python -m benchmarks.plain_loop --decay 1 --seeds 0 1 2 --epochs 100     # plain loop + CLI, 3 seeds each

Each seed trains the same model twice: once in a plain loop written as the README shows (``strrnn.lowrank_rnn`` with
orthogonal factors and relative thresholds, ``strrnn.param_groups`` with the decay λ on the thresholds,
``strrnn.STRRecipe`` and its ``lr_lambda``, Adam lr 1e-3, batch 100, no Lightning), once through
``python -m strrnn.train --mode lowrank --threshold-decay λ`` with the same settings. Both report the test accuracy
of the final model (the CLI's ``best.ckpt`` is selected among epochs at the final ranks; the plain loop reports the
last epoch).
Results: ``benchmarks/results/plain_loop/`` (one JSON per run, written atomically, reused when present; a table).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.nn import functional as F

import strrnn
from benchmarks import RESULTS
from benchmarks.runner import train_run
from strrnn.cli.compare import mean_std
from strrnn.fileio import atomic_write_text
from strrnn.modes import STR_DEBIAS, STR_DECAY, STR_DECAY_WARMUP

OUT = RESULTS / "plain_loop"
FSDD = Path(__file__).resolve().parents[2] / "shared" / "data" / "fsdd"


def plain_run(decay: float, seed: int, epochs: int, data_dir: Path, hidden: int = 100) -> dict:
    """One run of the README's loop; returns ``{"test_acc", "ranks", "params_str"}``."""
    torch.manual_seed(seed)
    dm = strrnn.data.get("fsdd", root=data_dir, batch_size=100, seed=seed, progress=False)
    dm.setup("fit")
    model = strrnn.models.build("keyword_spotter", in_chans=dm.num_features, num_classes=dm.num_classes,
                                cell="fastgrnn", hidden_size=hidden)
    strrnn.lowrank_rnn(model, factors="orthogonal", relative=True)
    opt = torch.optim.Adam(strrnn.param_groups(model, weight_decay=1e-3, threshold_decay=decay), lr=1e-3)
    loader = dm.train_dataloader()
    recipe = strrnn.STRRecipe(model, opt, total_steps=epochs * len(loader), decay_warmup=STR_DECAY_WARMUP,
                              debias=STR_DEBIAS)
    cosine = torch.optim.lr_scheduler.LambdaLR(opt, recipe.lr_lambda)  # restarted where the ranks freeze
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)  # the CLI's per-epoch order (Lightning calls this): the same batches
        for x, y in loader:
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
            recipe.step()
            cosine.step()
    model.eval()
    correct = count = 0
    with torch.no_grad():
        for x, y in dm.test_dataloader():
            correct += int((model(x).argmax(-1) == y).sum())
            count += len(y)
    return {"test_acc": correct / count, "ranks": recipe.ranks(), "params_str": recipe.params()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--decay", type=float, default=STR_DECAY, help="λ, the decay on the thresholds s")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--data-dir", type=Path, default=FSDD)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--skip-cli", action="store_true", help="plain loop only")
    args = parser.parse_args(argv)
    if not (args.data_dir / "recordings").is_dir():
        print(f"FSDD not found at {args.data_dir} (--data-dir); nothing to run")
        return 2
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in args.seeds:
        path = args.out / f"plain_{args.decay:g}_s{seed}_e{args.epochs}.json"
        if not path.exists():
            started = time.time()
            result = plain_run(args.decay, seed, args.epochs, args.data_dir)
            result["wall_s"] = round(time.time() - started, 1)
            atomic_write_text(path, json.dumps(result, indent=1))
        plain = json.loads(path.read_text())
        cli = None
        if not args.skip_cli:
            flags = ["--dataset", "fsdd", "--data-dir", str(args.data_dir), "--mode", "lowrank", "--threshold-decay",
                     f"{args.decay:g}", "--epochs", str(args.epochs), "--seed", str(seed)]
            name = f"cli_{args.decay:g}_s{seed}_e{args.epochs}"
            cli = train_run(args.out / name, flags, log=args.out / "logs" / f"{name}.log")
        rows.append((seed, plain, cli))
    lines = [f"# README plain loop vs CLI, FSDD, threshold decay {args.decay:g}, {args.epochs} epochs", "",
             "| seed | plain loop ranks | plain loop test % | CLI ranks | CLI test % |", "|---|---|---|---|---|"]
    for seed, plain, cli in rows:
        cli_ranks = ",".join(str(v) for v in cli["ranks"].values()) if cli else ""
        cli_acc = f"{100 * cli['test_acc']:.2f}" if cli else ""
        lines.append(f"| {seed} | {','.join(str(v) for v in plain['ranks'].values())} | "
                     f"{100 * plain['test_acc']:.2f} | {cli_ranks} | {cli_acc} |")
    plain_acc = [100 * p["test_acc"] for _, p, _ in rows]
    summary = f"plain loop {mean_std(plain_acc)}"
    if not args.skip_cli:
        cli_acc = [100 * c["test_acc"] for _, _, c in rows]
        summary += f"; CLI {mean_std(cli_acc)}"
    lines += ["", summary, ""]
    atomic_write_text(args.out / f"table_{args.decay:g}_e{args.epochs}.md", "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
