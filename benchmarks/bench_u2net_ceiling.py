#!/usr/bin/env python
"""The model-bound ceiling of U2-Net throughput on this machine (no server at all).

Runs 8 inputs back to back through OpenVINO f32 on all cores, in latency mode
(1 stream, what the service uses) and throughput mode (2 streams, 1 thread
each, async queue). No HTTP server can serve more images per second than this.

usage: .venv/bin/python -m benchmarks.bench_u2net_ceiling [--model PATH] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import openvino as ov


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    home = Path(os.environ.get("U2NET_HOME", "~/.u2net")).expanduser()
    parser.add_argument("--model", type=Path, default=home / "u2net.onnx")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    threads = os.cpu_count() or 2
    core = ov.Core()
    model = core.read_model(str(args.model))
    common = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"}
    latency = core.compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY", **common})
    throughput = core.compile_model(
        model, "CPU", {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": 2, **common}
    )
    rng = np.random.default_rng(0)
    inputs = [rng.random((1, 3, 320, 320), dtype=np.float32) for _ in range(8)]
    request = latency.create_infer_request()
    request.infer({0: inputs[0]})
    for _ in range(args.rounds):
        start = time.perf_counter()
        for x in inputs:
            request.infer({0: x})
        t_lat = time.perf_counter() - start
        queue = ov.AsyncInferQueue(throughput, 2)
        start = time.perf_counter()
        for x in inputs:
            queue.start_async({0: x})
        queue.wait_all()
        t_thr = time.perf_counter() - start
        print(
            f"{len(inputs)} inputs: latency mode {len(inputs) / t_lat:.2f} images/s, "
            f"throughput mode (2 streams) {len(inputs) / t_thr:.2f} images/s"
        )


if __name__ == "__main__":
    main()
