#!/usr/bin/env python3
"""U2-Net backend in-process, in one run: runtimes, resize choices, parity with rembg.

- Timing: every system (rembg's ``remove(..., only_mask=True)`` and each of our
  configs) runs in its own process, so no idle thread pool of another system
  (ORT spin-waits by default) steals its cores; systems are interleaved in
  ``--rounds`` rounds and each figure is the best over rounds x ``--repeats``
  (on a shared machine the least-disturbed run estimates the cost; medians
  there mostly measure the neighbours). Per system: the model alone on one
  320x320 input, and end to end per photo at its own size and 3000 px wide.
- Resize steps on the largest photo: LANCZOS to 320 exact vs ``reducing_gap=3``;
  the 320 -> full-size upscale with LANCZOS, BICUBIC, BILINEAR.
- Parity of every config with rembg: worst mean abs diff and worst share of
  pixels off by > 32 levels over all photos (tolerance 1.0 and 0.5%).

usage: .venv/bin/python -m benchmarks.bench_u2net_model --home DIR [--model u2net] [--repeats 5]
       [--rounds 2] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from models.hardware import cpu_description, openvino_available
from models.u2net import U2NetPredictor, default_threads
from models.u2net_weights import resolve_u2net_weights

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
#: our configs: runtime/resize/precision
CONFIGS = [
    "onnxruntime/exact/f32",
    "onnxruntime/fast/f32",
    "openvino/exact/f32",
    "openvino/fast/f32",
    "openvino/fast/bf16",
]
REMBG = "rembg remove"


def best_time(fn: Callable[[], object], repeats: int) -> float:
    """Minimum over repeats, after one warm-up run."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def load_cases(images: Path) -> list[tuple[str, np.ndarray]]:
    photos = sorted(p for p in images.iterdir() if p.suffix.lower() in {".jpg", ".png"})
    cases: list[tuple[str, np.ndarray]] = []
    for p in photos:
        img = Image.open(p).convert("RGB")
        cases.append((f"{p.name}@own", np.asarray(img)))
        if img.width != 3000:
            big = img.resize((3000, round(img.height * 3000 / img.width)), Image.Resampling.LANCZOS)
            cases.append((f"{p.name}@3000", np.asarray(big)))
    return cases


def load_system(system: str, model: str, home: Path) -> tuple[Callable[[np.ndarray], Any], Any]:
    """(mask function, model-only function) for rembg or one of our configs."""
    x = np.random.default_rng(0).standard_normal((1, 3, 320, 320)).astype(np.float32)
    if system == REMBG:
        from rembg import new_session, remove

        session = new_session(model)
        return (
            lambda rgb: remove(rgb, session=session, only_mask=True),
            lambda: session.inner_session.run(None, {"input.1": x}),
        )
    runtime, resize, precision = system.split("/")
    p = U2NetPredictor.load(
        model,
        home=home,
        runtime=runtime,  # type: ignore[arg-type]
        resize=resize,  # type: ignore[arg-type]
        precision=precision,  # type: ignore[arg-type]
        allow_download=False,
    )
    return (lambda rgb: p.predict([rgb])[0]), (lambda: p._run(x))


def time_system(args: argparse.Namespace) -> dict[str, float]:
    """Child process: time one system on every case; JSON on stdout."""
    mask_fn, model_fn = load_system(args.system, args.model, args.home)
    out = {"model only 320x320": best_time(model_fn, args.repeats)}
    for case, rgb in load_cases(args.images):
        out[case] = best_time(lambda rgb=rgb: mask_fn(rgb), args.repeats)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", type=Path, required=True, help="U2NET_HOME holding the model")
    ap.add_argument("--model", default="u2net")
    ap.add_argument("--images", type=Path, default=SHARED / "images")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--system", default=None, help=argparse.SUPPRESS)  # child mode
    args = ap.parse_args(argv)
    os.environ["U2NET_HOME"] = str(args.home)  # where rembg finds the same file
    if args.system:
        print(json.dumps(time_system(args)))
        return 0

    import onnxruntime as ort

    weights = resolve_u2net_weights(args.model, home=args.home, allow_download=False)
    configs = [c for c in CONFIGS if not c.startswith("openvino") or openvino_available()]
    systems = [REMBG, *configs]
    cases = load_cases(args.images)
    result: dict[str, Any] = {
        "machine": {
            "cpu": cpu_description(),
            "cpus": default_threads(),
            "python": platform.python_version(),
            "onnxruntime": ort.__version__,
            "openvino": __import__("openvino").__version__ if openvino_available() else None,
            "pillow": Image.__version__,
        },
        "model": args.model,
        "weights": weights.as_dict(),
        "repeats": args.repeats,
        "rounds": args.rounds,
    }

    # parity, in this process (no timing)
    from rembg import new_session, remove

    session = new_session(args.model)
    preds = {c: load_system(c, args.model, args.home)[0] for c in configs}
    worst = {c: [0.0, 0.0, 0.0] for c in configs}
    for _, rgb in cases:
        ref = np.asarray(remove(rgb, session=session, only_mask=True)).astype(np.int16)
        for c, fn in preds.items():
            d = np.abs(fn(rgb).astype(np.int16) - ref)
            w = worst[c]
            worst[c] = [
                max(w[0], float(d.mean())),
                max(w[1], float((d > 32).mean())),
                max(w[2], float(d.max())),
            ]
    result["parity_worst"] = {
        c: {
            "mad": w[0],
            "far_pct": 100 * w[1],
            "max_abs": w[2],
            "ok": w[0] <= 1.0 and w[1] <= 0.005,
        }
        for c, w in worst.items()
    }
    del preds, session

    # resize steps on the largest photo
    name, big = max(cases, key=lambda c: c[1].size)
    pil = Image.fromarray(big)
    small = Image.fromarray(np.random.default_rng(1).integers(0, 256, (320, 320), dtype=np.uint8))
    lz = Image.Resampling.LANCZOS
    steps: dict[str, Callable[[], object]] = {
        "down LANCZOS exact": lambda: pil.resize((320, 320), lz),
        "down LANCZOS reducing_gap=3": lambda: pil.resize((320, 320), lz, reducing_gap=3.0),
        "up LANCZOS": lambda: small.resize(pil.size, lz),
        "up BICUBIC": lambda: small.resize(pil.size, Image.Resampling.BICUBIC),
        "up BILINEAR": lambda: small.resize(pil.size, Image.Resampling.BILINEAR),
    }
    result["resize_steps_s"] = {"image": f"{name} {pil.size}"} | {
        k: best_time(f, args.repeats) for k, f in steps.items()
    }

    # timing, one process per system, interleaved rounds
    timings: dict[str, dict[str, float]] = {}
    base = [sys.executable, str(Path(__file__).resolve())]
    for r in range(args.rounds):
        for system in systems:
            cmd = [*base, "--home", str(args.home), "--model", args.model]
            cmd += ["--images", str(args.images), "--repeats", str(args.repeats)]
            out = subprocess.run([*cmd, "--system", system], capture_output=True, text=True)
            if out.returncode:
                raise SystemExit(f"{system} failed:\n{out.stderr}")
            got = json.loads(out.stdout.strip().splitlines()[-1])
            prev = timings.setdefault(system, got)
            timings[system] = {k: min(v, prev[k]) for k, v in got.items()}
            print(f"round {r + 1} {system}: model {got['model only 320x320']:.3f} s", flush=True)
    result["times_s"] = timings
    rows = [k for k in next(iter(timings.values())) if k != "model only 320x320"]
    result["total_end_to_end_s"] = {s: sum(t[k] for k in rows) for s, t in timings.items()}
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
