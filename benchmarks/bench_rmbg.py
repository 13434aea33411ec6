"""Benchmark the RMBG-2.0 (BiRefNet) predictor: throughput, latency, peak memory, precision.

Timing mode (default): images/s and ms/image of `RMBGPredictor.predict` (upload,
resize, normalize, network, mask resize, download) on the photos of
--images, for every batch size x dtype x compile setting.
Precision mode (--precision): mean/max absolute difference of bf16 and fp16
masks from fp32 masks on the 0-255 scale, over all photos.

Without --weights the network gets the deterministic synthetic weights of
the parity tests: timings are then exact for the architecture, but precision
figures are only indicative (real weights produce saturated masks).

Examples:
    python -m benchmarks.bench_rmbg --arch birefnet-lite --resolution 256     # CPU
    python -m benchmarks.bench_rmbg --weights /models/rmbg-2.0                # GPU, 1024
    python -m benchmarks.bench_rmbg --precision --arch birefnet-lite --resolution 256
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from models.birefnet import BiRefNetConfig
from models.rmbg import RMBGPredictor, resolve_device
from models.rmbg_weights import build_birefnet, load_birefnet

REPO = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = REPO / ".." / "shared" / "images"


def load_photos(directory: Path) -> list[np.ndarray]:
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    if not files:
        raise SystemExit(f"no photos in {directory}")
    return [np.array(Image.open(p).convert("RGB")) for p in files]


def load_model(weights: str | None, arch: str) -> tuple[torch.nn.Module, str]:
    if weights:
        return load_birefnet(weights, arch=arch), f"weights: {weights}"
    from tests.support.birefnet_weights import synthetic_state_dict

    model = build_birefnet(synthetic_state_dict(arch), BiRefNetConfig.preset(arch))
    return model, "weights: SYNTHETIC (recipe of the parity tests), no real checkpoint given"


def _rss_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak(device: torch.device) -> int:
    """Reset the peak-memory counter; return the current baseline in bytes."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    # Linux: writing 5 to clear_refs resets VmHWM (peak RSS) of this process
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    rss = _rss_kib("VmRSS")
    return (rss or 0) * 1024


def read_peak(device: torch.device) -> int:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device)
    hwm = _rss_kib("VmHWM")
    if hwm is None:  # not resettable: process-wide peak
        hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return hwm * 1024


def batches(photos: list[np.ndarray], batch_size: int, count: int) -> list[list[np.ndarray]]:
    """`count` batches cycling through the photos, so sizes and aspect ratios vary."""
    out, i = [], 0
    for _ in range(count):
        out.append([photos[(i + k) % len(photos)] for k in range(batch_size)])
        i += batch_size
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_config(
    model: torch.nn.Module,
    photos: list[np.ndarray],
    args: argparse.Namespace,
    device: str,
    dtype: str,
    compiled: bool,
) -> list[dict[str, object]]:
    pred = RMBGPredictor(
        model, resolution=args.resolution, device=device, dtype=dtype, compile=compiled
    )
    rows = []
    for bs in args.batch_sizes:
        t0 = time.perf_counter()
        pred.warmup(bs)  # compiles this batch shape when compiled
        warm_s = time.perf_counter() - t0
        base = reset_peak(pred.device)
        work = batches(photos, bs, args.iters)
        sync(pred.device)
        t0 = time.perf_counter()
        for batch in work:
            pred.predict(batch)
        sync(pred.device)
        elapsed = time.perf_counter() - t0
        peak = read_peak(pred.device)
        n = bs * args.iters
        row = {
            "device": str(pred.device),
            "dtype": dtype,
            "compile": compiled,
            "batch": bs,
            "images_per_s": n / elapsed,
            "ms_per_image": 1000 * elapsed / n,
            "ms_per_batch": 1000 * elapsed / args.iters,
            "peak_mib": peak / 2**20,
            "peak_over_baseline_mib": (peak - base) / 2**20,
            "first_call_s": warm_s,
        }
        rows.append(row)
        print(
            f"| {row['device']} | {dtype} | {'on' if compiled else 'off'} | {bs} "
            f"| {row['images_per_s']:.2f} | {row['ms_per_image']:.0f} "
            f"| {row['peak_mib']:.0f} | {row['peak_over_baseline_mib']:.0f} "
            f"| {warm_s:.1f} |",
            flush=True,
        )
    return rows


def run_timing(model: torch.nn.Module, photos: list[np.ndarray], args: argparse.Namespace) -> list:
    device = resolve_device(args.device)
    dtypes = args.dtypes or (
        ["float32", "bfloat16", "float16"] if device.type == "cuda" else ["float32", "bfloat16"]
    )
    mem = "torch.cuda.max_memory_allocated" if device.type == "cuda" else "peak RSS (VmHWM)"
    print(f"\npeak memory: {mem}; 'over baseline' excludes weights and earlier allocations")
    print(
        "| device | dtype | compile | batch | images/s | ms/image | peak MiB "
        "| peak over baseline MiB | first call s |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    rows = []
    for compiled in args.compile:
        for dtype in dtypes:
            try:
                rows += time_config(model, photos, args, str(device), dtype, compiled)
            except Exception as error:  # report and go on with the other settings
                print(
                    f"| {device} | {dtype} | {'on' if compiled else 'off'} | - | FAILED: "
                    f"{type(error).__name__}: {str(error).splitlines()[0][:120]} |"
                )
            torch._dynamo.reset()
    return rows


def run_precision(model: torch.nn.Module, photos: list[np.ndarray], args: argparse.Namespace):
    device = args.device
    ref = RMBGPredictor(model, resolution=args.resolution, device=device, dtype="float32")
    ref_masks = [m.astype(np.int16) for m in ref.predict(photos)]
    dtypes = args.dtypes or ["bfloat16", "float16"]
    print("\n| dtype | mean abs diff (0-255) | max abs diff | pixels differing | per photo max |")
    print("| --- | --- | --- | --- | --- |")
    out = {}
    for dtype in dtypes:
        if dtype == "float32":
            continue
        try:
            pred = RMBGPredictor(model, resolution=args.resolution, device=device, dtype=dtype)
            masks = [m.astype(np.int16) for m in pred.predict(photos)]
        except Exception as error:
            print(f"| {dtype} | FAILED: {type(error).__name__}: {error} | | | |")
            continue
        diffs = [np.abs(a - b) for a, b in zip(masks, ref_masks, strict=True)]
        flat = np.concatenate([d.ravel() for d in diffs])
        out[dtype] = {
            "mean": float(flat.mean()),
            "max": int(flat.max()),
            "frac_diff": float((flat > 0).mean()),
            "per_photo_max": [int(d.max()) for d in diffs],
        }
        r = out[dtype]
        print(
            f"| {dtype} | {r['mean']:.3f} | {r['max']} | {100 * r['frac_diff']:.1f}% "
            f"| {r['per_photo_max']} |"
        )
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", help="local dir/file or hub repo id; default: synthetic")
    ap.add_argument("--arch", default="rmbg-2.0", choices=BiRefNetConfig.PRESETS)
    ap.add_argument("--resolution", type=int, default=1024)
    ap.add_argument("--device", default="auto")
    ap.add_argument(
        "--batch-sizes", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4, 8]
    )
    ap.add_argument("--dtypes", type=lambda s: s.split(","), default=None)
    ap.add_argument(
        "--compile",
        type=lambda s: [x.strip() == "on" for x in s.split(",")],
        default=[False, True],
        help="comma list of off/on (default: off,on)",
    )
    ap.add_argument("--iters", type=int, default=3, help="timed batches per setting")
    ap.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--precision", action="store_true", help="measure bf16/fp16 vs fp32 masks")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    photos = load_photos(args.images)
    t0 = time.perf_counter()
    model, weights_note = load_model(args.weights, args.arch)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"# bench_rmbg: {' '.join(sys.argv[1:])}")
    print(f"arch {args.arch} ({n_params / 1e6:.1f} M params), resolution {args.resolution}")
    print(weights_note)
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()},"
        f" {torch.get_num_threads()} CPU threads, cuda={torch.cuda.is_available()}"
        + (f" ({torch.cuda.get_device_name()})" if torch.cuda.is_available() else "")
    )
    print(f"model ready in {time.perf_counter() - t0:.1f} s; {len(photos)} photos")
    if args.precision:
        if not args.weights:
            print("NOTE: synthetic weights: precision figures are indicative only")
        result = run_precision(model, photos, args)
    else:
        result = run_timing(model, photos, args)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
