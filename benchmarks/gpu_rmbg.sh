#!/usr/bin/env bash
# One GPU session's RMBG-2.0 checks, in one call: CUDA parity with the original
# implementation's vectors, then bench_rmbg timing (eager, every dtype and batch
# size), mask precision of bf16/fp16 against fp32, and torch.compile for bf16.
# Usage: benchmarks/gpu_rmbg.sh IMAGES_DIR VECTORS_DIR OUT_DIR
# Synthetic weights (the gated checkpoint is not reachable): timings are exact
# for the architecture, precision figures indicative.
set -o pipefail
images=${1:-../shared/images} vectors=${2:-../shared/birefnet} out=${3:-.}
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
$py -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
timeout 150 $py -m benchmarks.rmbg_gpu_parity --vectors "$vectors" 2>&1 | tee "$out/parity.txt"
timeout 200 $py -m benchmarks.bench_rmbg --device cuda --images "$images" --compile off \
  --iters 5 --json "$out/timing.json" 2>&1 | tee "$out/timing.txt"
timeout 90 $py -m benchmarks.bench_rmbg --device cuda --images "$images" --precision \
  2>&1 | tee "$out/precision.txt"
timeout 120 $py -m benchmarks.bench_rmbg --device cuda --images "$images" --compile on \
  --dtypes bfloat16 --batch-sizes 1,4 --iters 5 2>&1 | tee "$out/compile.txt"
