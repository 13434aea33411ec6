"""PyTorch fp32 vs OpenVINO for RMBG-2.0 (BiRefNet) on the CPU, in one run.

Prints: the CPU model; per-image seconds of the whole `predict` call (resize,
normalise, network, mask resize) for PyTorch fp32 and for OpenVINO at every
precision candidate of this CPU (f32, plus bf16 where it is native); the
one-time conversion; the mask difference of each from PyTorch fp32 (0-255,
mean and max over the photos at their own size); and the cold start of a fresh
process whose OpenVINO cache is already filled (weights read and hashed, IR
read, compiled, one warm-up), with and without OpenVINO's compiled-blob cache
(CACHE_DIR).

Without --weights the network gets the synthetic weights of the parity tests
(written to a temporary checkpoint so that the cold start reads a real file):
timings are those of the architecture; mask differences are only indicative.

Run from the repository root:
    python -m benchmarks.bench_rmbg_runtime --arch rmbg-2.0 --resolution 1024
    python -m benchmarks.bench_rmbg_runtime --arch birefnet-lite --resolution 512 --iters 8
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

DEFAULT_IMAGES = Path(__file__).resolve().parents[1] / ".." / "shared" / "images"


def load_photos(directory: Path) -> list[np.ndarray]:
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    if not files:
        raise SystemExit(f"no photos in {directory}")
    return [np.array(Image.open(p).convert("RGB")) for p in files]


def time_per_image(predictor: Any, photos: list[np.ndarray], iters: int) -> tuple[float, list]:
    """Warm up once, then predict `iters` photos one call each; (s/image, masks)."""
    predictor.warmup(1)
    masks, start = [], time.perf_counter()
    for i in range(iters):
        masks.append(predictor.predict([photos[i % len(photos)]])[0])
    return (time.perf_counter() - start) / iters, masks


def mask_diff(masks: list[np.ndarray], ref: list[np.ndarray]) -> tuple[float, int]:
    pairs = zip(masks, ref, strict=True)
    flat = np.concatenate(
        [np.abs(a.astype(np.int16) - b.astype(np.int16)).ravel() for a, b in pairs]
    )
    return float(flat.mean()), int(flat.max())


def cold_start_child(args: argparse.Namespace) -> None:
    """One replica start in this fresh process; prints its phases as JSON."""
    t0 = time.perf_counter()
    import torch  # noqa: F401

    from models.rmbg_openvino import RMBGOpenVINOPredictor
    from models.rmbg_weights import load_birefnet

    t_import = time.perf_counter() - t0
    t1 = time.perf_counter()
    model = load_birefnet(args.weights, arch=args.arch)
    t_weights = time.perf_counter() - t1
    t2 = time.perf_counter()
    pred = RMBGOpenVINOPredictor(
        model,
        resolution=args.resolution,
        precision=args.precision or "auto",
        threads=args.threads,
        cache_dir=args.cache_dir,
        compile_cache=args.compile_cache,
    )
    del model
    t_ctor = time.perf_counter() - t2
    t3 = time.perf_counter()
    pred.warmup(1)
    t_warm = time.perf_counter() - t3
    t4 = time.perf_counter()
    pred.warmup(1)
    t_second = time.perf_counter() - t4
    info = pred.describe()
    print(
        json.dumps(
            {
                "import_s": t_import,
                "weights_s": t_weights,
                "predictor_s": t_ctor,
                "compile_s": info["compile_s"],
                "warmup_s": t_warm,
                "second_run_s": t_second,
                "total_s": t_import + t_weights + t_ctor + t_warm,
                "cache_hit": info["cache_hit"],
                "precision": info["precision"],
            }
        )
    )


def run_child(args: argparse.Namespace, weights: Path, compile_cache: bool) -> dict[str, Any]:
    cmd = [
        sys.executable, "-m", "benchmarks.bench_rmbg_runtime", "--child-cold-start",
        "--weights", str(weights), "--arch", args.arch, "--resolution", str(args.resolution),
        "--cache-dir", str(args.cache_dir),
    ]  # fmt: skip
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if compile_cache:
        cmd.append("--compile-cache")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=Path.cwd())
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", type=Path, help="local dir/file; default: synthetic")
    ap.add_argument("--arch", default="rmbg-2.0", choices=["rmbg-2.0", "birefnet-lite"])
    ap.add_argument("--resolution", type=int, default=1024)
    ap.add_argument("--iters", type=int, default=3, help="timed images per runtime")
    ap.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    ap.add_argument("--threads", type=int, default=None, help="OpenVINO threads (default: all)")
    ap.add_argument("--cache-dir", type=Path, help="OpenVINO cache (default: a fresh temp dir)")
    ap.add_argument(
        "--ov-batch-sizes",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[1],
        help="static OpenVINO batch sizes to compare per image (each one converts once)",
    )
    ap.add_argument("--skip-torch", action="store_true", help="no PyTorch timing (no diffs)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--child-cold-start", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--compile-cache", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--precision", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child_cold_start:
        cold_start_child(args)
        return

    work = Path(tempfile.mkdtemp(prefix="bench-rmbg-runtime-"))
    try:
        run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path) -> None:
    import openvino as ov
    import torch

    from models.hardware import cpu_description
    from models.rmbg import RMBGPredictor
    from models.rmbg_openvino import RMBGOpenVINOPredictor, precision_candidates
    from models.rmbg_weights import load_birefnet

    args.cache_dir = args.cache_dir or work / "ov-cache"
    photos = load_photos(args.images)
    weights, note = args.weights, f"weights: {args.weights}"
    if weights is None:
        from tests.support.birefnet_weights import write_synthetic_checkpoint

        weights = write_synthetic_checkpoint(work / "weights", args.arch)
        note = "weights: SYNTHETIC (recipe of the parity tests); mask diffs indicative only"
    model = load_birefnet(weights, arch=args.arch)
    caps = list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    candidates = precision_candidates(caps)
    result: dict[str, Any] = {
        "cpu": cpu_description(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "load_average": os.getloadavg(),
        "openvino": ov.get_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "capabilities": caps,
        "arch": args.arch,
        "resolution": args.resolution,
        "iters": args.iters,
    }
    print(f"# bench_rmbg_runtime {' '.join(sys.argv[1:])}")
    print(f"CPU: {result['cpu']} ({result['cpus_usable']} usable), capabilities {caps}")
    print(
        f"openvino {result['openvino']}, torch {torch.__version__} ({torch.get_num_threads()} thr)"
    )
    print(f"{args.arch} @ {args.resolution}, {note}; load average {result['load_average']}")

    rows: list[dict[str, Any]] = []
    ref: list[np.ndarray] | None = None
    if not args.skip_torch:
        pt = RMBGPredictor(model, resolution=args.resolution, device="cpu", dtype="float32")
        sec, ref = time_per_image(pt, photos, args.iters)
        rows.append({"runtime": "torch", "precision": "fp32", "batch": 1, "s_per_image": sec})
        print(f"torch fp32: {sec:.2f} s/image", flush=True)
        del pt

    for batch in args.ov_batch_sizes:
        for precision in candidates:
            pred = RMBGOpenVINOPredictor(
                model,
                resolution=args.resolution,
                batch_size=batch,
                precision=precision,
                threads=args.threads,
                cache_dir=args.cache_dir,
            )
            if not pred.cache_hit:
                result.setdefault("conversion_s", {})[f"b{batch}"] = pred.conversion_s
                print(f"conversion (batch {batch}): {pred.conversion_s:.1f} s", flush=True)
            if batch == 1:
                sec, masks = time_per_image(pred, photos, args.iters)
            else:  # whole batches: per-image cost of the static batch-N graph
                pred.warmup(batch)
                work_items = [photos[i % len(photos)] for i in range(args.iters * batch)]
                start = time.perf_counter()
                masks = []
                for i in range(0, len(work_items), batch):
                    masks += pred.predict(work_items[i : i + batch])
                sec = (time.perf_counter() - start) / len(work_items)
                masks = masks[: args.iters]
            row = {
                "runtime": "openvino",
                "precision": pred.precision,
                "effective": pred.precision_effective,
                "batch": batch,
                "s_per_image": sec,
                "compile_s": pred.compile_s,
            }
            if ref is not None:
                row["mask_mean_diff"], row["mask_max_diff"] = mask_diff(masks, ref)
            rows.append(row)
            print(f"openvino {precision} b{batch}: {sec:.2f} s/image", flush=True)
            del pred
    result["rows"] = rows

    auto = RMBGOpenVINOPredictor(
        model, resolution=args.resolution, threads=args.threads, cache_dir=args.cache_dir
    )
    result["auto"] = {
        k: auto.describe()[k]
        for k in ("precision", "precision_source", "precision_timings_s", "precision_mask_diff")
    }
    del auto, model

    cold = {
        "no blob cache": run_child(args, weights, compile_cache=False),
        "blob cache, first": run_child(args, weights, compile_cache=True),
        "blob cache, warm": run_child(args, weights, compile_cache=True),
    }
    result["cold_start"] = cold
    blob = sum(f.stat().st_size for f in Path(args.cache_dir).rglob("compiled/*") if f.is_file())
    ir = sum(f.stat().st_size for f in Path(args.cache_dir).rglob("model.bin"))
    result["cache_mib"] = {"ir_bin": ir / 2**20, "compiled_blobs": blob / 2**20}
    result["load_average_end"] = os.getloadavg()

    base = next((r["s_per_image"] for r in rows if r["runtime"] == "torch"), None)
    print("\n| runtime | precision | batch | s/image | speed-up | mask mean diff | max diff |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        speed = f"{base / r['s_per_image']:.2f}x" if base else "-"
        mean = f"{r['mask_mean_diff']:.4f}" if "mask_mean_diff" in r else "-"
        print(
            f"| {r['runtime']} | {r['precision']} | {r['batch']} | {r['s_per_image']:.2f} "
            f"| {speed} | {mean} | {r.get('mask_max_diff', '-')} |"
        )
    print(f"\nconversion s: {result.get('conversion_s')}; auto precision: {result['auto']}")
    print("\n| cold start (cache filled) | import s | weights s | predictor s | compile s "
          "| warm-up s | total s | next run s |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, c in cold.items():
        print(
            f"| {name} | {c['import_s']:.1f} | {c['weights_s']:.1f} | {c['predictor_s']:.1f} "
            f"| {c['compile_s']:.1f} | {c['warmup_s']:.1f} | {c['total_s']:.1f} "
            f"| {c['second_run_s']:.1f} |"
        )
    print(f"\ncache sizes MiB: {result['cache_mib']}; load average at end {os.getloadavg()}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
