"""STR overhead on single layers: forward+backward time with STR vs plain, as interleaved median ratios.

    python -m benchmarks.overhead [--rounds 30] [--threads N]

Rows: nn.Linear(1024, 1024) with LowRankSTR (free, orthogonal) vs plain, batch 256; nn.Conv2d(64, 64, 3) on
32×32 inputs with UnstructuredSTR vs plain, batch 256. A step is forward, backward and an SGD step. Targets:
UnstructuredSTR ≤ 1.10×, orthogonal LowRankSTR on the 1024² layer ≤ 3×.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from torch import nn

import strrnn
from benchmarks.timing import interleaved, median_ratio


def train_step(layer: nn.Module, x: torch.Tensor) -> callable:
    """Forward, backward and an SGD step: the step changes the factors, so orthogonal ones are retracted each
    step, as in training."""
    opt = torch.optim.SGD([p for p in layer.parameters() if p.requires_grad], lr=1e-6)

    def step():
        opt.zero_grad(set_to_none=True)
        layer(x).sum().backward()
        opt.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    x_lin = torch.randn(256, 1024)
    plain_lin = nn.Linear(1024, 1024)
    free = strrnn.lowrank(nn.Linear(1024, 1024), factors="free")
    orth = strrnn.lowrank(nn.Linear(1024, 1024), factors="orthogonal")
    retracted = strrnn.lowrank(nn.Linear(1024, 1024), factors="orthogonal", retract=True)
    x_conv = torch.randn(256, 64, 32, 32)
    plain_conv = nn.Conv2d(64, 64, 3)
    sparse_conv = strrnn.unstructured(nn.Conv2d(64, 64, 3))

    lin_times = interleaved(
        {"plain": train_step(plain_lin, x_lin), "free": train_step(free, x_lin), "orth": train_step(orth, x_lin),
         "retract": train_step(retracted, x_lin)},
        rounds=args.rounds,
    )
    conv_times = interleaved(
        {"plain": train_step(plain_conv, x_conv), "str": train_step(sparse_conv, x_conv)},
        rounds=max(10, args.rounds // 3),
    )
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, rounds {args.rounds}")
    print("| layer | variant | median ratio to plain | plain step (ms, median) |")
    print("|---|---|---|---|")
    plain_ms = 1e3 * statistics.median(lin_times["plain"])
    print(f"| Linear 1024×1024, batch 256 | LowRankSTR free | {median_ratio(lin_times, 'free', 'plain'):.2f}× "
          f"| {plain_ms:.1f} |")
    print(f"| Linear 1024×1024, batch 256 | LowRankSTR orthogonal | "
          f"{median_ratio(lin_times, 'orth', 'plain'):.2f}× | {plain_ms:.1f} |")
    print(f"| Linear 1024×1024, batch 256 | LowRankSTR orthogonal, retract=True | "
          f"{median_ratio(lin_times, 'retract', 'plain'):.2f}× | {plain_ms:.1f} |")
    conv_ms = 1e3 * statistics.median(conv_times["plain"])
    print(f"| Conv2d 64→64 3×3, 32×32, batch 256 | UnstructuredSTR | "
          f"{median_ratio(conv_times, 'str', 'plain'):.2f}× | {conv_ms:.1f} |")


if __name__ == "__main__":
    main()
