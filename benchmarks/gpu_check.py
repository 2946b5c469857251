"""One-GPU check of the CNN and RNN training paths: throughput, peak memory, STR/dense ratios.

    python -m benchmarks.gpu_check                       # CUDA if present (what gpu_check.sh runs)
    python -m benchmarks.gpu_check --device cpu --steps 2  # CPU smoke run of the same code

1. ResNet-50, dense vs unstructured STR (``strrnn.sparsify``), ``--steps`` training steps each on random
   224×224 batches, bf16 autocast on CUDA (float32 on CPU), SGD momentum 0.875 with
   ``strrnn.param_groups``; the two models run in alternating blocks of steps so drift hits both alike.
2. The FastGRNN keyword spotter (``strrnn.models.build("keyword_spotter", ...)``, hidden 100, 32 log-mel
   features × 99 frames, batch 100), dense vs low-rank STR (``strrnn.lowrank_rnn``), ``--rnn-steps`` steps
   each on synthetic features, Adam with ``strrnn.param_groups``.

Prints images/s and sequences/s, peak memory per model and the STR/dense step-time ratio (target ≤ 1.10).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import statistics
import time
from pathlib import Path

import torch

import strrnn
from benchmarks.timing import interleaved, ratios
from cnn import models as cnn_models


def pick_device(name: str) -> torch.device:
    """``auto`` → CUDA when present, else CPU; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA when ``enabled``; a no-op context elsewhere."""
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def training_step(model, optimizer, inputs, labels, device, bf16):
    """A closure: zero_grad, forward (autocast), cross-entropy, backward, optimizer step."""

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, bf16):
            loss = torch.nn.functional.cross_entropy(model(inputs), labels)
        loss.backward()
        optimizer.step()

    return step


def peak_memory(device, build_and_step) -> float | None:
    """Peak allocated memory (GiB) of one fresh model's training steps, or None off CUDA."""
    if device.type != "cuda":
        build_and_step()
        return None
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    build_and_step()
    return torch.cuda.max_memory_allocated(device) / 2**30


def measure_dense_vs_str(build, total_steps: int, block: int, warmup: int, device):
    """Peak memory of three steps of each mode, then interleaved step times: ``(per_step, memory)``.

    ``build(mode) -> step`` makes a fresh model and optimizer for ``mode`` in ``("dense", "str")``.
    """
    memory = {}
    for mode in ("dense", "str"):

        def run_three(mode=mode):
            step = build(mode)
            for _ in range(3):
                step()
            synchronize(device)

        memory[mode] = peak_memory(device, run_three)
    steps = {"dense": build("dense"), "str": build("str")}
    # two contenders: the rotated order alternates (dense str, str dense, ...) so drift hits both alike
    per_step = interleaved(steps, rounds=math.ceil(total_steps / block), warmup=warmup, block=block,
                           sync=lambda: synchronize(device))
    return per_step, memory


def summarize(label: str, unit: str, batch: int, per_step: dict[str, list[float]], memory: dict) -> dict:
    result = {"ratio_str_over_dense": statistics.median(ratios(per_step, "str", "dense"))}
    for name, times in per_step.items():
        seconds = statistics.median(times)
        result[name] = {
            "step_ms": 1e3 * seconds,
            f"{unit}_per_s": batch / seconds,
            "peak_gib": memory.get(name),
        }
        mem = f", peak {memory[name]:.2f} GiB" if memory.get(name) is not None else ""
        print(f"  {label} {name:5s}: {1e3 * seconds:8.1f} ms/step, {batch / seconds:9.1f} {unit}/s{mem}")
    print(f"  {label} STR/dense step time: {result['ratio_str_over_dense']:.3f} (target <= 1.10)")
    return result


def check_resnet50(args, device) -> dict:
    """ResNet-50 dense vs unstructured STR on random images; returns the figures."""
    bf16 = device.type == "cuda" and not args.fp32
    size = args.image_size
    torch.manual_seed(0)
    images = torch.randn(args.batch_size, 3, size, size, device=device)
    labels = torch.randint(0, 1000, (args.batch_size,), device=device)
    if device.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)

    def build(mode: str):
        model = cnn_models.build("resnet50", 1000).to(device)
        if mode == "str":
            strrnn.sparsify(model, s_init=-5.0)  # a threshold that already prunes a little (sigmoid(-5)·|w|)
        if device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        groups = strrnn.param_groups(
            model, weight_decay=2.251757813e-05, threshold_lr=None, threshold_eps=None
        )
        optimizer = torch.optim.SGD(groups, lr=0.1, momentum=0.875)
        return training_step(model, optimizer, images, labels, device, bf16)

    per_step, memory = measure_dense_vs_str(build, args.steps, max(1, min(10, args.steps)), args.warmup, device)
    precision = "bf16 autocast" if bf16 else "fp32"
    print(f"ResNet-50, batch {args.batch_size}, {size}x{size}, {precision}, {args.steps} steps each:")
    return summarize("resnet50", "images", args.batch_size, per_step, memory)


def check_keyword_spotter(args, device) -> dict:
    """FastGRNN keyword spotter, dense vs low-rank STR, on synthetic 99×32 features; returns the figures."""
    batch, frames, features, classes = 100, 99, 32, 12
    torch.manual_seed(0)
    inputs = torch.randn(batch, frames, features, device=device)
    labels = torch.randint(0, classes, (batch,), device=device)

    def build(mode: str):
        model = strrnn.models.build(
            "keyword_spotter", in_chans=features, num_classes=classes, cell="fastgrnn", hidden_size=100
        ).to(device)
        if mode == "str":
            strrnn.lowrank_rnn(model)
        optimizer = torch.optim.Adam(strrnn.param_groups(model, weight_decay=1e-3), lr=1e-3)
        return training_step(model, optimizer, inputs, labels, device, bf16=False)

    per_step, memory = measure_dense_vs_str(
        build, args.rnn_steps, max(1, min(20, args.rnn_steps)), args.warmup, device
    )
    print(
        f"FastGRNN keyword spotter (hidden 100, {frames}x{features}, batch {batch}, fp32), "
        f"{args.rnn_steps} steps each:"
    )
    return summarize("fastgrnn", "sequences", batch, per_step, memory)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cuda, cuda:1, cpu")
    parser.add_argument("--steps", type=int, default=50,
                        help="ResNet-50 training steps per model (timed in blocks of 10: rounded up to whole blocks)")
    parser.add_argument(
        "--rnn-steps",
        type=int,
        default=None,
        help="keyword-spotter steps per model (default 200, or --steps when that is below 10: the smoke run; "
        "timed in blocks of 20: rounded up to whole blocks)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=None, help="ResNet-50 batch (default 128 on CUDA, 4 on CPU)"
    )
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument(
        "--warmup", type=int, default=None, help="untimed steps per model (default 5 on CUDA, 1 on CPU)"
    )
    parser.add_argument("--fp32", action="store_true", help="no bf16 autocast on CUDA")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    on_cuda = device.type == "cuda"
    args.batch_size = args.batch_size or (128 if on_cuda else 4)
    args.warmup = args.warmup if args.warmup is not None else (5 if on_cuda else 1)
    args.rnn_steps = args.rnn_steps or (200 if args.steps >= 10 else args.steps)
    if on_cuda:
        torch.backends.cudnn.benchmark = True
        name = torch.cuda.get_device_name(device)
    else:
        name = "CPU"
    print(f"device: {device} ({name}), torch {torch.__version__}")
    started = time.perf_counter()
    figures = {"device": name, "torch": torch.__version__}
    figures["resnet50"] = check_resnet50(args, device)
    figures["keyword_spotter"] = check_keyword_spotter(args, device)
    figures["wall_s"] = time.perf_counter() - started
    print(f"total {figures['wall_s']:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
