"""OpenVINO's CPU thread pinning with several model instances on one machine.

Replicas of a Serve group, actors of a batch job and `bgremove --instances` run several
OpenVINO instances side by side. OpenVINO pins its threads by default, to the first cores of
the process's CPU set, so instances in separate processes can land on the same core. This
runs 1 and then N processes at once, each timing `--threads`-thread inference of a U2-Net
file, pinned and unpinned, and prints ms per inference in each process.

    python -m benchmarks.bench_ov_pinning --model ../shared/models/u2netp.onnx --threads 1
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from models.hardware import cpu_description, usable_cpus

REPO = Path(__file__).resolve().parents[1]


def child(model: str, threads: int, pin: bool, runs: int) -> None:
    import openvino as ov

    compiled = ov.Core().compile_model(
        model,
        "CPU",
        {
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": "1",
            "INFERENCE_NUM_THREADS": str(threads),
            "ENABLE_CPU_PINNING": pin,
        },
    )
    x = np.random.default_rng(0).random((1, 3, 320, 320), dtype=np.float32)
    request = compiled.create_infer_request()
    for _ in range(3):
        request.infer({0: x})
    start = time.perf_counter()
    for _ in range(runs):
        request.infer({0: x})
    print(f"{(time.perf_counter() - start) / runs * 1000:.1f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(REPO.parent / "shared" / "models" / "u2netp.onnx"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--processes", type=int, default=usable_cpus())
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--child", choices=["pin", "nopin"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.model, args.threads, args.child == "pin", args.runs)
        return
    print(f"CPU: {cpu_description()}, {usable_cpus()} usable; model {Path(args.model).name}")
    print("| pinning | processes at once | threads each | ms per inference, each process |")
    print("| --- | --- | --- | --- |")
    for mode in ("pin", "nopin"):
        for count in (1, args.processes):
            cmd = [sys.executable, "-m", "benchmarks.bench_ov_pinning", "--child", mode]
            cmd += ["--model", args.model, "--threads", str(args.threads)]
            cmd += ["--runs", str(args.runs)]
            procs = [
                subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=REPO)
                for _ in range(count)
            ]
            times = [p.communicate()[0].strip() for p in procs]
            label = "default (pinned)" if mode == "pin" else "ENABLE_CPU_PINNING=NO"
            print(f"| {label} | {count} | {args.threads} | {', '.join(times)} |", flush=True)


if __name__ == "__main__":
    main()
