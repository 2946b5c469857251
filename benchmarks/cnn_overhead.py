"""STR overhead in unstructured mode: one training step of ResNet-18 with STR vs dense (CPU by default).

    python -m benchmarks.cnn_overhead                     # batch 32, 64×64, 30 rounds after 3 warm-up
    python -m benchmarks.cnn_overhead --rounds 40 --threads 2

A step is zero_grad + forward + cross-entropy + backward + SGD step (momentum 0.9, parameter groups from
``strrnn.param_groups``). Each round runs one step of each model, the order alternating round by round;
the reported figure is the median over rounds of the per-round ratio STR/dense (the target is ≤ 1.10), so
a machine whose speed drifts (shared cores) affects both sides of every ratio alike.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
from pathlib import Path

import torch

import strrnn
from benchmarks.timing import interleaved, ratios
from cnn import models


def make_step(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor):
    """A closure running one training step of ``model`` on the fixed batch ``images (B, 3, H, W)``."""
    optimizer = torch.optim.SGD(strrnn.param_groups(model, weight_decay=5e-5), lr=0.01, momentum=0.9)
    model.train()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()

    return step


def main(argv: list[str] | None = None) -> dict:
    """Measure and print the STR/dense step-time ratio; returns the figures as a dict."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--s-init", type=float, default=-5.0, help="STR s_init (sigmoid(-5) ≈ 0.7%% pruned)")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    images = torch.randn(args.batch_size, 3, args.image_size, args.image_size)
    labels = torch.randint(0, 1000, (args.batch_size,))
    dense = models.build(args.model, 1000)
    sparse = models.build(args.model, 1000)
    sparse.load_state_dict(dense.state_dict())
    strrnn.sparsify(sparse, s_init=args.s_init)
    steps = {"dense": make_step(dense, images, labels), "str": make_step(sparse, images, labels)}
    times = interleaved(steps, rounds=args.rounds, warmup=args.warmup)
    per_round = ratios(times, "str", "dense")

    figures = {
        "model": args.model,
        "batch": args.batch_size,
        "image_size": args.image_size,
        "rounds": args.rounds,
        "threads": torch.get_num_threads(),
        "dense_step_s_median": statistics.median(times["dense"]),
        "str_step_s_median": statistics.median(times["str"]),
        "ratio_median": statistics.median(per_round),
        "ratio_q25": statistics.quantiles(per_round, n=4)[0],
        "ratio_q75": statistics.quantiles(per_round, n=4)[2],
        "str_sparsity_percent": float(strrnn.report(sparse).iloc[-1]["sparsity"]),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
    }
    print(
        f"{args.model}, batch {args.batch_size}, {args.image_size}x{args.image_size}, CPU, "
        f"{figures['threads']} threads, {args.rounds} interleaved rounds"
    )
    print(f"dense step (median): {figures['dense_step_s_median'] * 1e3:.1f} ms")
    print(f"STR step   (median): {figures['str_step_s_median'] * 1e3:.1f} ms")
    print(
        f"STR/dense ratio: median {figures['ratio_median']:.3f} "
        f"(quartiles {figures['ratio_q25']:.3f}–{figures['ratio_q75']:.3f}); target <= 1.10"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
