#!/usr/bin/env bash
# One prepared GPU check (< 5 min on one CUDA GPU): ResNet-50 dense vs STR (50 steps each, 224×224, bf16) and the
# FastGRNN low-rank keyword spotter (200 steps each), printing images/s, sequences/s, peak memory, STR/dense.
#   bash benchmarks/gpu_check.sh                      # on the GPU machine, from the repository root
#   bash benchmarks/gpu_check.sh --device cpu --steps 2   # CPU smoke run
# Extra arguments go to `python -m benchmarks.gpu_check`. Figures also land in
# ${OUT:-benchmarks/results/gpu_check}/gpu_check.json.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
RESULTS="${OUT:-benchmarks/results/gpu_check}"
mkdir -p "$RESULTS"
"$PYTHON" -c 'import torch; print("cuda available:", torch.cuda.is_available())'
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
exec timeout 290 "$PYTHON" -m benchmarks.gpu_check --json "$RESULTS/gpu_check.json" "$@"
