"""What a background INT8 build costs the requests a U2-Net replica serves meanwhile.

A replica loads rembg's u2net as the service would, then one client sends one photo after
another (closed loop, as a busy replica sees them; ``--busy 0.7`` leaves 30% of the time
between requests, as a replica at 70% of its capacity) while the INT8 model is made beside
the weights by `models.u2net_int8_build.Int8Builder`: a child process at low priority on
`--build-threads` CPUs, with the shipped check photos. Printed: per phase (before, during
the build, after the switch) the requests and their p50/p99/max latency; the build's time,
its outcome, whether the replica switched and its model time before and after.

The build is started directly, so this runs on any CPU: on one with native bf16 the
service does not build INT8 (bf16 is its fast candidate) unless told ``--precision f32``
here stands for a CPU without bf16 (the replica then serves f32, as it would there).

    .venv/bin/python -m benchmarks.bench_int8_build --weights .models/u2net/u2net.onnx

On a CPU with bf16, ``OV_CPU_MAX_ISA=AVX2 ONEDNN_MAX_CPU_ISA=AVX2`` in the environment holds
OpenVINO to AVX2 (no BF16 capability, AVX2 INT8 kernels): the default ``auto`` then serves
f32 and builds, as on a CPU without bf16.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.loadgen import percentile
from models.hardware import cpu_description, usable_cpus
from models.u2net import U2NetPredictor
from models.u2net_int8_build import PHOTOS, BuildBudget, Int8Builder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, required=True, help="rembg's u2net.onnx")
    parser.add_argument("--precision", default="auto", help="the replica's u2net_precision")
    parser.add_argument("--threads", type=int, default=usable_cpus(), help="replica threads")
    parser.add_argument("--build-threads", type=int, default=1)
    parser.add_argument("--nice", type=int, default=10)
    parser.add_argument(
        "--no-idle", dest="idle", action="store_false", help="nice alone, no SCHED_IDLE"
    )
    parser.add_argument("--baseline-s", type=float, default=30.0)
    parser.add_argument("--after-s", type=float, default=30.0)
    parser.add_argument("--photo", type=Path, default=PHOTOS / "bike.jpg")
    parser.add_argument(
        "--busy",
        type=float,
        default=1.0,
        help="share of the time the client keeps a request in flight (1: saturated; 0.7: "
        "it waits 0.43x each request's latency before the next)",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="int8-build-") as home:
        weights = Path(home) / "u2net.onnx"
        shutil.copy(args.weights, weights)  # the INT8 files land beside it, not in yours
        predictor = U2NetPredictor.load(
            "u2net",
            home=home,
            allow_download=False,
            precision=args.precision,
            threads=args.threads,
            tuning_cache_dir=None,
        )
        before_label = predictor.info.label
        image = np.asarray(Image.open(args.photo).convert("RGB"))
        samples: list[tuple[float, float]] = []  # (end time, latency s)
        stop = threading.Event()

        def client() -> None:
            while not stop.is_set():
                start = time.perf_counter()
                predictor.predict([image])
                end = time.perf_counter()
                latency = end - start
                samples.append((end, latency))
                if args.busy < 1.0:
                    stop.wait(latency * (1.0 / args.busy - 1.0))

        worker = threading.Thread(target=client, daemon=True)
        worker.start()
        time.sleep(args.baseline_s)
        budget = BuildBudget(threads=args.build_threads, nice=args.nice, idle=args.idle)
        builder = Int8Builder(predictor.info.weights, budget, on_ready=predictor._adopt_int8)
        build_start = time.perf_counter()
        state = builder.run()  # in this thread: the client keeps serving meanwhile
        build_end = time.perf_counter()
        time.sleep(args.after_s)
        stop.set()
        worker.join()

    phases = {
        "before": [lat for t, lat in samples if t < build_start],
        "during build": [lat for t, lat in samples if build_start <= t < build_end],
        "after": [lat for t, lat in samples if t >= build_end],
    }
    print(
        f"CPU: {cpu_description()}, {os.cpu_count()} CPUs; replica {args.threads} threads, "
        f"build {args.build_threads} CPU(s) at nice {args.nice}"
        f"{' under SCHED_IDLE' if args.idle else ''}; photo {args.photo.name}; "
        f"client busy {args.busy:.0%}"
    )
    for name, lat in phases.items():
        if lat:
            ms = [x * 1000 for x in lat]
            print(
                f"{name:>13}: {len(ms):4d} requests, p50 {percentile(ms, 0.50):7.1f} ms, "
                f"p99 {percentile(ms, 0.99):7.1f} ms, max {max(ms):7.1f} ms"
            )
    timings = predictor.info.timings_ms
    print(
        f"build: {build_end - build_start:.0f} s, state {state} ({builder.reason}); "
        f"serving {before_label} -> {predictor.info.label}; model ms: "
        + ", ".join(f"{k} {v:.1f}" for k, v in timings.items())
    )


if __name__ == "__main__":
    main()
