"""Where BiRefNet's time goes in OpenVINO on this CPU, and how close to the CPU's peak it runs.

Compiles the service's OpenVINO model (synthetic weights unless ``--weights``; timings
do not depend on the values) with the service's CPU settings and the plugin's per-node
counters, runs it twice and prints, for the second run:

- time per (node type, kernel) with its share of the run;
- for the fully connected layers (most of Swin's work), GFLOP and GFLOP/s per kernel
  and shape, so the kernels' efficiency can be set against the CPU's FMA peak
  (``--peak-gflops``, e.g. 2 cores x 2 FMA units x 8 f32 lanes x 2 x GHz for AVX2).

    python -m benchmarks.profile_rmbg_openvino --arch rmbg-2.0 --resolution 512
"""

from __future__ import annotations

import argparse
import collections
import time
from typing import Any

import numpy as np

from benchmarks.rmbg_openvino_setup import add_model_args, f32_predictor
from models.hardware import cpu_description
from models.rmbg_openvino import compile_config


def _fc_shapes(compiled: Any) -> dict[str, tuple[int, int, int]]:
    """(M, K, N) of each fully connected node of the compiled model, by name."""
    shapes = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        if op.get_rt_info()["layerType"].astype(str) != "FullyConnected":
            continue
        data, weights = (op.input(i).get_partial_shape().to_shape() for i in (0, 1))
        k = data[-1]
        n = weights[0] if weights[1] == k else weights[1]
        shapes[op.get_friendly_name()] = (int(np.prod(list(data)[:-1])), k, n)
    return shapes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_args(parser, resolution=512)
    parser.add_argument("--peak-gflops", type=float, help="the CPU's f32 peak, for the ratio")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()

    import openvino as ov

    predictor = f32_predictor(args)
    config = {**compile_config(predictor.threads, "f32"), "PERF_COUNT": "YES"}
    compiled = ov.Core().compile_model(str(predictor.cache_file), "CPU", config)
    request = compiled.create_infer_request()
    x = np.random.default_rng(0).standard_normal((1, 3, args.resolution, args.resolution))
    x = x.astype(np.float32)
    request.infer({0: x})
    start = time.perf_counter()
    request.infer({0: x})
    wall = time.perf_counter() - start
    print(f"CPU: {cpu_description()}, {predictor.threads} threads, OpenVINO {ov.get_version()}")
    print(f"{args.arch} at {args.resolution}: {wall:.2f} s for one image\n")

    by_kernel: collections.Counter[tuple[str, str]] = collections.Counter()
    fc: dict[tuple[str, str], list[float]] = collections.defaultdict(lambda: [0.0, 0.0, 0])
    shapes = _fc_shapes(compiled)
    for node in request.profiling_info:
        seconds = node.real_time.total_seconds()
        by_kernel[(node.node_type, node.exec_type)] += seconds
        if node.node_name in shapes:
            m, k, n = shapes[node.node_name]
            row = fc[(node.exec_type, f"{k}x{n}")]
            row[0] += seconds
            row[1] += 2.0 * m * k * n
            row[2] += 1
    total = sum(by_kernel.values())
    print("| node type | kernel | s | share |\n| --- | --- | --- | --- |")
    for (kind, kernel), seconds in by_kernel.most_common(args.top):
        print(f"| {kind} | {kernel} | {seconds:.3f} | {100 * seconds / total:.1f}% |")

    peak = f" | of {args.peak_gflops:.0f} peak" if args.peak_gflops else ""
    print(f"\n| FC kernel | weights KxN | layers | s | GFLOP | GFLOP/s{peak} |")
    print("| --- | --- | --- | --- | --- | --- |" + (" --- |" if peak else ""))
    seconds_all = flops_all = 0.0
    for (kernel, shape), (seconds, flops, count) in sorted(fc.items(), key=lambda kv: -kv[1][0]):
        seconds_all, flops_all = seconds_all + seconds, flops_all + flops
        rate = flops / seconds / 1e9
        share = f" | {100 * rate / args.peak_gflops:.0f}%" if args.peak_gflops else ""
        print(
            f"| {kernel} | {shape} | {count:.0f} | {seconds:.3f} | {flops / 1e9:.1f} | "
            f"{rate:.1f}{share} |"
        )
    rate = flops_all / seconds_all / 1e9
    share = f", {100 * rate / args.peak_gflops:.0f}% of peak" if args.peak_gflops else ""
    print(
        f"\nfully connected: {seconds_all:.2f} s of {total:.2f} s, "
        f"{flops_all / 1e9:.0f} GFLOP at {rate:.1f} GFLOP/s{share}"
    )


if __name__ == "__main__":
    main()
