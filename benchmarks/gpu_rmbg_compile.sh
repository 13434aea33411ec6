#!/usr/bin/env bash
# Second GPU check: the service's loader picks float16 on CUDA by default and
# serves with it; then eager vs torch.compile at the batch size of
# configs/gpu.yaml's neighbourhood (8), float16, same process.
# Usage: benchmarks/gpu_rmbg_compile.sh IMAGES_DIR OUT_DIR
set -o pipefail
images=${1:-../shared/images} out=${2:-.}
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
timeout 60 $py - <<'PY' 2>&1 | tee "$out/loader.txt"
import tempfile, numpy as np
from models.rmbg import load_rmbg_predictor
from tests.support.birefnet_weights import write_synthetic_checkpoint
d = write_synthetic_checkpoint(tempfile.mkdtemp(), "rmbg-2.0").parent
p = load_rmbg_predictor(d, device="auto", dtype="auto", offline=True)
m = p.predict([np.random.default_rng(0).integers(0, 255, (900, 1400, 3), dtype=np.uint8)])
print("loader:", p.describe(), "mask", m[0].shape, m[0].dtype, int(m[0].min()), int(m[0].max()))
PY
timeout 360 $py -m benchmarks.bench_rmbg --device cuda --images "$images" --compile off,on \
  --dtypes float16 --batch-sizes 8 --iters 5 2>&1 | tee "$out/compile.txt"
