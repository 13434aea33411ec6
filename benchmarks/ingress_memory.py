"""Ingress memory, in-process: the ingress's own rendering path for thousands of requests,
its RSS sampled, one fresh process per malloc configuration.

What runs per request is what `deployments.ingress.Ingress.render` runs, minus HTTP and Ray:
`RenderOptions.parse` (with the presets), then `imaging.pipeline.remove_background_async`,
whose decode and finish (compose + encode) go to worker threads with `asyncio.to_thread`
(the event loop's default pool, as in a Serve replica), with a masker that does the ingress's
side of a model call as `deployments.routing.MaskRouter._call` does: the photo shrunk to the
model's input (`ModelInputSpec.to_input`, in a worker thread) and the small mask enlarged to
the photo (`to_size`, in a worker thread). Requests follow the soak's option MIX
(`benchmarks.cluster_soak.MIX`) over the shared photos, `--concurrency` at a time.

The masks are real U2-Net masks, computed once per photo with the project's own predictor
(`models.registry.load_predictor`, rembg's u2net weights from U2NET_HOME, ONNX Runtime f32)
and then reused: in the service the ingress receives the mask from a model replica, another
process, so the ingress's memory does not depend on running the model per request, only on
what it does with the mask. They are computed in a process of their own and cached on disk.

glibc reads MALLOC_ARENA_MAX when a process starts, so each variant runs as a subprocess
with its own environment:

- ``default``: glibc's defaults (up to 8 arenas per core);
- ``arena2``: MALLOC_ARENA_MAX=2;
- ``trim``: glibc's defaults, `malloc_trim(0)` after every sample;
- ``nocache``: glibc's defaults, the canvas cache of `imaging.backdrops` cleared after every
  request (what the cache holds is then excluded);
- ``mmap1m``: MALLOC_MMAP_THRESHOLD_=1 MiB (fixed: glibc no longer raises it);
- ``arena2_mmap1m``: both variables;
- ``mallopt``: what the ingress does since this benchmark: `deployments.ingress.tune_malloc`
  (2 arenas, 1 MiB mmap threshold, set with mallopt at start), before any request.

Printed per variant: RSS after warm-up -> end, the Theil-Sen slope per hour (at this run's
request rate) and per 1000 requests, the canvas caches' bytes, glibc's free-but-kept bytes
(mallinfo2), and with ``--tracemalloc`` the Python allocations that grew most between the
first sample after warm-up and the end.

    nice -n 10 .venv/bin/python -m benchmarks.ingress_memory --requests 3000
    nice -n 10 .venv/bin/python -m benchmarks.ingress_memory --variants default,arena2
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import ctypes.util
import hashlib
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT.parent / "shared" / "images"
U2NET_HOME = ROOT / ".models" / "u2net"
MASK_CACHE = Path("~/.cache/bg-removal/ingress_memory_masks.npz").expanduser()

VARIANTS: dict[str, dict[str, str]] = {
    "default": {},
    "arena2": {"MALLOC_ARENA_MAX": "2"},
    "trim": {},
    "nocache": {},
    "mmap1m": {"MALLOC_MMAP_THRESHOLD_": "1048576"},
    "arena2_mmap1m": {"MALLOC_ARENA_MAX": "2", "MALLOC_MMAP_THRESHOLD_": "1048576"},
    "mallopt": {},
}


# --- masks, once -----------------------------------------------------------------------------


def photos(folder: Path) -> list[tuple[str, bytes]]:
    """The soak's photos (`benchmarks.loadgen.load_photos`' rule), by name."""
    return [
        (p.name, p.read_bytes())
        for p in sorted(folder.iterdir())
        if p.suffix.lower() in {".jpg", ".png"}
    ]


def _key(name: str, data: bytes) -> str:
    return f"{name}:{hashlib.sha256(data).hexdigest()[:16]}"


def compute_masks(folder: Path, home: Path, out: Path) -> None:
    """Each photo's U2-Net mask at the model's input size (what a replica sends back), and
    the model's input spec, into ``out`` (.npz)."""
    from imaging.decode import decode_image
    from imaging.limits import Limits
    from models.registry import TIERS, U2NET, U2NetLoadConfig, load_predictor

    config = U2NetLoadConfig(
        model_name="u2net",
        home=str(home),
        runtime="onnxruntime",
        precision="f32",
        threads=1,
        allow_download=False,
    )
    predictor = load_predictor(U2NET, config)
    spec = TIERS[U2NET].input_size(config, predictor)
    arrays: dict[str, np.ndarray] = {"__spec__": np.array(json.dumps(spec.as_dict()))}
    limits = Limits()
    for name, data in photos(folder):
        rgb = decode_image(data, max_bytes=limits.max_bytes, max_pixels=limits.max_pixels).rgb
        [mask] = predictor.predict([spec.to_input(rgb)])
        arrays[_key(name, data)] = mask
        print(f"  mask {name}: {rgb.shape[1]}x{rgb.shape[0]} -> {mask.shape[1]}x{mask.shape[0]}")
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, **arrays)  # type: ignore[arg-type]


# --- memory facts ----------------------------------------------------------------------------


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def malloc_stats() -> dict[str, float]:
    """glibc's totals over all arenas, MiB: in arenas (sbrk/heaps), of which free but kept,
    and in mmapped chunks."""
    if not hasattr(_LIBC, "mallinfo2"):
        return {}
    _LIBC.mallinfo2.restype = _MallInfo2
    info = _LIBC.mallinfo2()
    return {
        "arena_mib": round(info.arena / 2**20, 1),
        "free_kept_mib": round(info.fordblks / 2**20, 1),
        "mmapped_mib": round(info.hblkhd / 2**20, 1),
    }


def malloc_trim() -> None:
    _LIBC.malloc_trim(0)


def canvas_cache_bytes() -> dict[str, Any]:
    """What `imaging.backdrops`' canvas cache holds: entries and MiB of pixels."""
    from imaging import backdrops

    cache = backdrops._CANVASES
    return {
        "entries": len(cache),
        "hits": cache.hits,
        "misses": cache.misses,
        "total_mib": round(cache.nbytes / 2**20, 1),
        "max_mib": round(cache.max_bytes / 2**20, 1),
    }


def theil_sen(points: list[tuple[float, float]]) -> float:
    """Median of pairwise slopes: one spike or drop does not make a trend."""
    slopes = sorted(
        (y1 - y0) / (x1 - x0)
        for i, (x0, y0) in enumerate(points)
        for x1, y1 in points[i + 1 :]
        if x1 > x0
    )
    return slopes[len(slopes) // 2] if slopes else 0.0


# --- one variant, in this process ------------------------------------------------------------


async def _run(opts: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.cluster_soak import MIX
    from imaging import backdrops
    from imaging.foreground import warmup as warm_up_edges
    from imaging.limits import Limits
    from imaging.options import RenderOptions
    from imaging.pipeline import MaskOutcome, remove_background_async
    from imaging.presets import load_presets, preset_fields
    from imaging.resize import ModelInputSpec

    stored = np.load(opts.masks)
    spec = ModelInputSpec.from_dict(json.loads(str(stored["__spec__"])))
    cases = [(data, stored[_key(name, data)]) for name, data in photos(opts.images)]
    presets = preset_fields(load_presets())
    limits = Limits()
    if opts.variant == "mallopt":
        from deployments.ingress import tune_malloc

        assert tune_malloc()  # as `Ingress.__init__` does
    warm_up_edges()  # as `Ingress.__init__` does

    mixed = zip(itertools.cycle(cases), itertools.cycle(MIX), strict=False)
    trim = opts.variant == "trim"
    nocache = opts.variant == "nocache"
    if opts.tracemalloc:
        import tracemalloc

        tracemalloc.start(opts.tracemalloc)
    semaphore = asyncio.Semaphore(opts.concurrency)
    samples: list[tuple[float, int, float]] = []  # (t_s, requests done, RSS MiB)
    done = 0
    started = time.monotonic()
    first_snapshot = None
    peak = 0.0

    async def one(data: bytes, small_mask: np.ndarray, fields: dict[str, str]) -> None:
        nonlocal done
        async with semaphore:
            options = RenderOptions.parse(fields, presets=presets, bg_image=False)

            async def masker(rgb: np.ndarray) -> MaskOutcome:
                # the ingress's side of a model call (`MaskRouter._call`): shrink, then the
                # replica's small mask enlarged to the photo
                await asyncio.to_thread(spec.to_input, rgb)
                height, width = rgb.shape[:2]
                mask = await asyncio.to_thread(spec.to_size, small_mask, height, width)
                return MaskOutcome(mask, "u2net")

            result = await remove_background_async(data, options, masker, limits=limits)
            assert result.body
            done += 1
            if nocache:
                backdrops._CANVASES.clear()

    pending: set[asyncio.Task[None]] = set()
    total = opts.warmup + opts.requests
    for i, ((data, mask), fields) in enumerate(mixed):
        if i >= total:
            break
        while len(pending) >= opts.concurrency * 2:
            _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        pending.add(asyncio.create_task(one(data, mask, dict(fields))))
        if done >= opts.warmup and (done - opts.warmup) // opts.every >= len(samples):
            if trim:
                malloc_trim()
            rss = rss_mib()
            peak = max(peak, rss)
            samples.append((time.monotonic() - started, done, rss))
            if first_snapshot is None and opts.tracemalloc:
                first_snapshot = tracemalloc.take_snapshot()
            if len(samples) % 10 == 1:
                print(f"  [{opts.variant}] {done} requests, RSS {rss:.0f} MiB", flush=True)
    if pending:
        await asyncio.wait(pending)
    if trim:
        malloc_trim()
    end_rss = rss_mib()
    samples.append((time.monotonic() - started, done, end_rss))
    elapsed = time.monotonic() - started

    kept = samples
    per_s = theil_sen([(t, v) for t, _, v in kept])
    per_request = theil_sen([(float(n), v) for _, n, v in kept])
    report: dict[str, Any] = {
        "variant": opts.variant,
        "env": VARIANTS[opts.variant],
        "requests": done,
        "warmup_requests": opts.warmup,
        "concurrency": opts.concurrency,
        "seconds": round(elapsed, 1),
        "rate_req_s": round(done / elapsed, 2),
        "rss_start_mib": round(kept[0][2], 1),
        "rss_end_mib": round(end_rss, 1),
        "rss_peak_mib": round(max(peak, end_rss), 1),
        "slope_mib_per_hour": round(per_s * 3600, 1),
        "slope_mib_per_1000_requests": round(per_request * 1000, 2),
        "samples": [(round(t, 1), n, round(v, 1)) for t, n, v in samples],
        "malloc": malloc_stats(),
        "canvas_caches": canvas_cache_bytes(),
    }
    if first_snapshot is not None:
        last = tracemalloc.take_snapshot()
        growth = last.compare_to(first_snapshot, "lineno")[:12]
        report["tracemalloc_top_growth"] = [str(stat) for stat in growth]
    return report


def child(opts: argparse.Namespace) -> None:
    report = asyncio.run(_run(opts))
    print("RESULT " + json.dumps(report), flush=True)


# --- the variants, one subprocess each -------------------------------------------------------


def run_variant(variant: str, opts: argparse.Namespace) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.update(VARIANTS[variant])
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.ingress_memory",
        "--child",
        variant,
        "--masks",
        str(opts.masks),
        "--images",
        str(opts.images),
        "--requests",
        str(opts.requests),
        "--warmup",
        str(opts.warmup),
        "--every",
        str(opts.every),
        "--concurrency",
        str(opts.concurrency),
        "--tracemalloc",
        str(opts.tracemalloc),
    ]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
        print(line)
    raise RuntimeError(f"{variant} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000, help="measured, after warm-up")
    parser.add_argument("--warmup", type=int, default=176, help="requests before sampling")
    parser.add_argument("--every", type=int, default=50, help="requests per RSS sample")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight")
    parser.add_argument("--variants", default="default,arena2", help=f"of {','.join(VARIANTS)}")
    parser.add_argument("--images", type=Path, default=IMAGES)
    parser.add_argument("--u2net-home", type=Path, default=U2NET_HOME)
    parser.add_argument("--masks", type=Path, default=MASK_CACHE, help="cached masks (.npz)")
    parser.add_argument(
        "--tracemalloc", type=int, default=0, help="frames per traceback; 0: off (it is slow)"
    )
    parser.add_argument("--json", type=Path, help="write the reports here")
    parser.add_argument("--child", choices=list(VARIANTS), help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.child:
        opts.variant = opts.child
        child(opts)
        return

    from models.hardware import cpu_description

    have = set(np.load(opts.masks).files) if opts.masks.exists() else set()
    if not {_key(n, d) for n, d in photos(opts.images)} <= have:
        print(f"computing U2-Net masks once into {opts.masks} ...")
        env = {**os.environ, "U2NET_HOME": str(opts.u2net_home)}
        code = (
            "import sys; from pathlib import Path; from benchmarks.ingress_memory import "
            "compute_masks; compute_masks(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))"
        )
        args = [str(opts.images), str(opts.u2net_home), str(opts.masks)]
        subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=ROOT, check=True)

    print(f"CPU {cpu_description()}, {os.cpu_count()} cores; {opts.requests} requests per variant")
    reports = []
    for variant in opts.variants.split(","):
        report = run_variant(variant.strip(), opts)
        reports.append(report)
        print(
            f"{report['variant']:8s} {report['requests']} requests in {report['seconds']:.0f} s "
            f"({report['rate_req_s']:.1f}/s): RSS {report['rss_start_mib']:.0f} -> "
            f"{report['rss_end_mib']:.0f} MiB (peak {report['rss_peak_mib']:.0f}), "
            f"{report['slope_mib_per_hour']:+.1f} MiB/h, "
            f"{report['slope_mib_per_1000_requests']:+.2f} MiB/1000 requests; "
            f"malloc {report['malloc']}; canvas caches {report['canvas_caches']['total_mib']} MiB",
            flush=True,
        )
        for line in report.get("tracemalloc_top_growth", []):
            print("    " + line)
    if opts.json:
        opts.json.parent.mkdir(parents=True, exist_ok=True)
        opts.json.write_text(json.dumps(reports, indent=2) + "\n")


if __name__ == "__main__":
    main()
