"""STR overhead in unstructured mode: one training step of a ResNet with STR vs dense (CPU by default).

    python -m benchmarks.cnn_overhead                     # ResNet-18, batch 32, 64×64, 30 rounds after 3 warm-up
    python -m benchmarks.cnn_overhead --rounds 40 --threads 2
    python -m benchmarks.cnn_overhead --preset resnet50-224 --threads 1   # ResNet-50, batch 16, 224×224, 10 rounds
    python -m benchmarks.cnn_overhead --compare-unfused   # also time STR through the plain (unfused) formula

A step is zero_grad + forward + cross-entropy + backward + SGD step (momentum 0.9, parameter groups from
``strrnn.param_groups``). Each round runs one step of each model, the order rotating round by round;
the reported figure is the median over rounds of the per-round ratio STR/dense (the target is ≤ 1.10), so
a machine whose speed drifts (shared cores) affects both sides of every ratio alike. ``--preset`` picks the model,
input size, batch and rounds; any of those flags given explicitly overrides it. ``--compare-unfused`` adds a third
model whose :class:`strrnn.UnstructuredSTR` layers use the plain formula (``fused = False``), the path the fused
threshold replaced. Minor page faults per step are reported too (Linux/macOS): the plain formula's weight-sized
temporaries were fresh allocations that the OS had to fault in on every step, and that count does not depend on
how loaded the machine is.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
from collections.abc import Callable
from pathlib import Path

import torch

import strrnn
from benchmarks.timing import interleaved, ratios
from cnn import models
from strrnn.unstructured_str import UnstructuredSTR

try:  # minor page faults per step; the resource module exists on Linux and macOS only
    import resource
except ImportError:  # pragma: no cover - Windows
    resource = None

# model, image size, batch, rounds of each preset; explicit flags override them
PRESETS = {
    "resnet18-64": {"model": "resnet18", "image_size": 64, "batch_size": 32, "rounds": 30},
    "resnet50-224": {"model": "resnet50", "image_size": 224, "batch_size": 16, "rounds": 10},
}


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


def count_faults(step: Callable[[], None], faults: list[int]) -> Callable[[], None]:
    """``step`` that appends its minor page faults (allocations the OS had to back with fresh pages) to ``faults``."""
    if resource is None:
        return step

    def counted() -> None:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        step()
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)

    return counted


def main(argv: list[str] | None = None) -> dict:
    """Measure and print the STR/dense step-time ratio; returns the figures as a dict."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="resnet18-64",
                        help="model, image size, batch and rounds (default resnet18-64: batch 32, 64×64, 30 rounds)")
    parser.add_argument("--model", default=None, help="a cnn.models name (default: the preset's)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--s-init", type=float, default=-5.0, help="STR s_init (sigmoid(-5) ≈ 0.7%% pruned)")
    parser.add_argument("--compare-unfused", action="store_true",
                        help="also time STR through the plain soft-threshold formula (UnstructuredSTR.fused = False)")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    images = torch.randn(args.batch_size, 3, args.image_size, args.image_size)
    labels = torch.randint(0, 1000, (args.batch_size,))
    dense = models.build(args.model, 1000)
    sparse = models.build(args.model, 1000)
    sparse.load_state_dict(dense.state_dict())
    strrnn.sparsify(sparse, s_init=args.s_init)
    contenders = {"dense": dense, "str": sparse}
    if args.compare_unfused:
        unfused = models.build(args.model, 1000)
        unfused.load_state_dict(dense.state_dict())
        strrnn.sparsify(unfused, s_init=args.s_init)
        for layer in unfused.modules():
            if isinstance(layer, UnstructuredSTR):
                layer.fused = False
        contenders["str_unfused"] = unfused
    faults: dict[str, list[int]] = {name: [] for name in contenders}
    steps = {name: count_faults(make_step(model, images, labels), faults[name]) for name, model in contenders.items()}
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
    if resource is not None:  # the timed rounds only (the warm-up's first steps fault in every buffer once)
        for name in contenders:
            figures[f"{name}_minor_faults_per_step_median"] = statistics.median(faults[name][-args.rounds:])
    if args.compare_unfused:
        unfused_ratios = ratios(times, "str_unfused", "dense")
        figures["str_unfused_step_s_median"] = statistics.median(times["str_unfused"])
        figures["str_unfused_ratio_median"] = statistics.median(unfused_ratios)
        figures["str_unfused_ratio_q25"] = statistics.quantiles(unfused_ratios, n=4)[0]
        figures["str_unfused_ratio_q75"] = statistics.quantiles(unfused_ratios, n=4)[2]
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
    if args.compare_unfused:
        print(
            f"STR unfused/dense ratio: median {figures['str_unfused_ratio_median']:.3f} (quartiles "
            f"{figures['str_unfused_ratio_q25']:.3f}–{figures['str_unfused_ratio_q75']:.3f}); "
            f"unfused step (median) {figures['str_unfused_step_s_median'] * 1e3:.1f} ms"
        )
    if resource is not None:
        print("minor page faults per step (median): " + ", ".join(
            f"{name} {figures[f'{name}_minor_faults_per_step_median']:.0f}" for name in contenders))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
