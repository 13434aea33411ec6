#!/usr/bin/env python
"""Edge colour estimation: accuracy on synthetic ground truth, cost on a 7 MP photo.

    .venv/bin/python benchmarks/bench_foreground.py [--runs 7] [--skip-rembg]

Accuracy: a real photo as the true foreground F, mixed through a known soft matte (a disc with
a wide blurred rim plus hair-like strands, `imaging.matte_truth.synthetic_matte`) over saturated
and textured backgrounds: I = aF + (1 - a)B. Error: mean |F_est - F| (0..255) over the soft
pixels, for the raw cut-out (F_est = I), the paper's blur-fusion x2 (Forte & Pitie 2021, as
published: windows of 91 and 7 px, weights a and 1 - a, F corrected alone; reimplemented here
with scipy for reference), ours (`estimate_foreground`) and pymatting's
`estimate_foreground_ml` (its defaults; what rembg's ``decontaminate`` runs).

Cost: bike.jpg upscaled to 3240x2160 (7.0 MP), with the real U2-Net mask (u2net when
.models/u2net/u2net.onnx exists, else u2netp from ../shared/models): ours on two threads and
on one, pymatting's ML, rembg's ``remove`` with and without ``decontaminate`` (same u2netp
session; the difference is its decontamination), and our ``cutout`` raw vs refined. Wall
times are best and median of ``--runs``; ``cpu`` is the process CPU time of the best run.
The load average is printed too: on a shared machine, wall times of threaded code are noisy.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from imaging.compose import cutout
from imaging.foreground import estimate_foreground
from imaging.foreground import warmup as warmup_foreground
from imaging.matte_truth import composite, edge_error, synthetic_matte
from models.hardware import cpu_description as cpu_model

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
IMAGES = SHARED / "images"
SOLID = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}
# (foreground photo, size (w, h), matte seed, backgrounds: a solid colour name or a photo)
CASE_SETS = [
    ("horse.jpg", (480, 360), 3, ["red", "green", "blue", "boat.jpg"]),
    ("0002-01.jpg", (560, 400), 5, ["white", "black", "cyan", "bike.jpg"]),
]
SOLID.update({"white": (255, 255, 255), "black": (0, 0, 0), "cyan": (0, 200, 220)})
BIG = (3240, 2160)


def photo(name: str, size: tuple[int, int]) -> np.ndarray:
    image = Image.open(IMAGES / name).convert("RGB")
    return np.asarray(image.resize(size, Image.Resampling.LANCZOS))


def paper_blur_fusion_x2(image: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Blur-fusion x2 as published, for reference: F^ = box(aF)/box(a),
    B^ = box((1-a)B)/box(1-a), F = F^ + a (I - a F^ - (1-a) B^); a 91 px pass from F = B = I,
    then a 7 px pass from (F, B^) of the first."""
    from scipy.ndimage import uniform_filter

    img = image.astype(np.float64)
    a = alpha.astype(np.float64)[:, :, None] / 255.0
    f, b = img, img
    for size in (91, 7):

        def box(x: np.ndarray, size: int = size) -> np.ndarray:
            return uniform_filter(x, size=(size, size, 1), mode="reflect")

        ba = box(a)
        fh = box(f * a) / np.maximum(ba, 1e-12)
        bh = box(b * (1 - a)) / np.maximum(1 - ba, 1e-12)
        f = np.clip(fh + a * (img - a * fh - (1 - a) * bh), 0, 255)
        b = bh
    out = image.copy()
    soft = (alpha > 0) & (alpha < 255)
    out[soft] = np.round(f[soft]).astype(np.uint8)
    return out


def pymatting_ml(image: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    from pymatting import estimate_foreground_ml

    est = estimate_foreground_ml(image / 255.0, alpha / 255.0)
    return np.clip(est * 255.0 + 0.5, 0, 255).astype(np.uint8)


def accuracy() -> None:
    print("\n## Error on synthetic ground truth: mean |F_est - F| over soft pixels (0..255)\n")
    print("| foreground | background | soft px | raw | paper BF x2 | ours | pymatting ML |", end="")
    print(" ours/ML |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    ratios = []
    for fg_name, size, seed, backgrounds in CASE_SETS:
        fg = photo(fg_name, size)
        alpha = synthetic_matte(size[1], size[0], seed=seed)
        soft = int(((alpha > 0) & (alpha < 255)).sum())
        for bg_name in backgrounds:
            bg = photo(bg_name, size) if bg_name.endswith(".jpg") else np.array(SOLID[bg_name])
            image = composite(fg, bg, alpha)
            errs = [
                edge_error(est, fg, alpha)
                for est in (
                    image,
                    paper_blur_fusion_x2(image, alpha),
                    estimate_foreground(image, alpha),
                    pymatting_ml(image, alpha),
                )
            ]
            ratios.append(errs[2] / errs[3])
            cells = " | ".join(f"{e:.2f}" for e in errs)
            print(f"| {fg_name} | {bg_name} | {soft} | {cells} | {errs[2] / errs[3]:.2f} |")
    print(f"\nours/ML: worst {max(ratios):.2f}, mean {statistics.mean(ratios):.2f}")


def timed(fn: Callable[[], Any], runs: int) -> tuple[float, float, float]:
    """(best wall, median wall, CPU time of the best run), in seconds."""
    walls, cpus = [], []
    for _ in range(runs):
        c, t = time.process_time(), time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    best = int(np.argmin(walls))
    return walls[best], statistics.median(walls), cpus[best]


def big_case() -> tuple[np.ndarray, np.ndarray, str]:
    from models.u2net import U2NetPredictor

    rgb = np.asarray(
        Image.open(IMAGES / "bike.jpg").convert("RGB").resize(BIG, Image.Resampling.BICUBIC)
    )
    u2net = ROOT / ".models" / "u2net" / "u2net.onnx"
    if u2net.is_file():
        predictor = U2NetPredictor.load(model_name="u2net", path=u2net, allow_download=False)
    else:
        path = SHARED / "models" / "u2netp.onnx"
        predictor = U2NetPredictor.load(model_name="u2netp", path=path, allow_download=False)
    return rgb, predictor.predict([rgb])[0], predictor.info.weights.name


def cost(runs: int, skip_rembg: bool) -> None:
    rgb, mask, model = big_case()
    h, w = mask.shape
    soft = (mask > 0) & (mask < 255)
    print(f"\n## Cost on a {w}x{h} photo ({w * h / 1e6:.1f} MP, bike.jpg upscaled)\n")
    print(f"Mask: {model}; soft pixels {soft.mean():.1%} of the image.\n")
    rows: list[tuple[str, tuple[float, float, float]]] = []
    estimate_foreground(rgb, mask)
    rows.append(("ours, 2 threads", timed(lambda: estimate_foreground(rgb, mask), runs)))
    rows.append(("ours, 1 thread", timed(lambda: estimate_foreground(rgb, mask, threads=1), runs)))
    rows.append(("cutout(edges='raw')", timed(lambda: cutout(rgb, mask, edges="raw"), runs)))
    rows.append(("cutout(edges='refined')", timed(lambda: cutout(rgb, mask), runs)))
    pymatting_ml(rgb[:64, :64], mask[:64, :64])  # its numba compile/cache load
    rows.append(("pymatting estimate_foreground_ml", timed(lambda: pymatting_ml(rgb, mask), 2)))
    if not skip_rembg:
        rows.extend(rembg_rows(rgb))
    print("| what | best wall s | median wall s | cpu s (best run) |")
    print("| --- | ---: | ---: | ---: |")
    for name, (best, median, cpu) in rows:
        print(f"| {name} | {best:.3f} | {median:.3f} | {cpu:.3f} |")


def rembg_rows(rgb: np.ndarray) -> list[tuple[str, tuple[float, float, float]]]:
    """rembg 2.0.86 ``remove`` on its own u2netp session, plain and with ``decontaminate``."""
    from rembg import new_session, remove

    with tempfile.TemporaryDirectory() as home:
        shutil.copy(SHARED / "models" / "u2netp.onnx", Path(home) / "u2netp.onnx")
        old = os.environ.get("U2NET_HOME")
        os.environ["U2NET_HOME"] = home  # rembg finds its weights here, no download
        try:
            session = new_session("u2netp")
        finally:
            if old is None:
                del os.environ["U2NET_HOME"]
            else:
                os.environ["U2NET_HOME"] = old
    remove(rgb, session=session, post_process_mask=False)
    return [
        (
            "rembg remove(post_process_mask=False)",
            timed(lambda: remove(rgb, session=session, post_process_mask=False), 2),
        ),
        (
            "rembg remove(..., decontaminate=True)",
            timed(
                lambda: remove(rgb, session=session, post_process_mask=False, decontaminate=True),
                2,
            ),
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--skip-rembg", action="store_true")
    parser.add_argument("--skip-accuracy", action="store_true")
    args = parser.parse_args()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"CPU: {cpu_model()}; {len(os.sched_getaffinity(0))} usable cores; load avg {load}")
    t, c = time.perf_counter(), time.process_time()
    warmup_foreground()
    print(
        f"Compiling our loops (once per process, `warmup()`): {time.perf_counter() - t:.1f} s "
        f"wall, {time.process_time() - c:.1f} s cpu"
    )
    if not args.skip_accuracy:
        accuracy()
    cost(args.runs, args.skip_rembg)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\nload avg at the end: {load}")


if __name__ == "__main__":
    main()
