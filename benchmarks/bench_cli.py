#!/usr/bin/env python
"""`bgremove p` against `rembg p` on the same folders, same machine, same run, real u2net.

Two folders are built in a temporary directory from the shared photos: the photos at their
own sizes, and the same photos scaled to --width px wide (same formats), each copied
--copies times so the per-process start-up (imports, model load) weighs as it would on a
folder of some size. Each tool processes each folder once, into an empty output folder, as a
user would run it; the figure is images per second of wall time for the whole command
(start-up and model load included). `bgremove` runs with its defaults (refined edges, which
is more work than rembg's plain cut-out) and with ``--edges raw`` (rembg's cut-out).

Before timing, each tool processes one image once: the OS caches the 176 MB model file, and
bgremove's u2net runtime choice is measured once and cached (as after any first run).

usage: .venv/bin/python -m benchmarks.bench_cli [--copies 3] [--width 3000]
       [--rembg .venv-rembg/bin/rembg] [--u2net-home .models/u2net] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image

from models.hardware import cpu_description, usable_cpus

ROOT = Path(__file__).resolve().parents[1]
SHARED_IMAGES = ROOT.parent / "shared" / "images"
IMAGE_SUFFIXES = {".jpg", ".png"}
#: bgremove's runs: its defaults, and rembg's plain cut-out (no edge-colour work)
VARIANTS: tuple[tuple[str, list[str]], ...] = (
    ("bgremove p", []),
    ("bgremove p --edges raw", ["--edges", "raw"]),
)


@dataclass(frozen=True)
class Run:
    tool: str
    folder: str
    images: int
    wall_s: float
    #: bgremove's own rate once the model is loaded (its summary line); None for rembg
    steady_images_per_s: float | None = None

    @property
    def images_per_s(self) -> float:
        return self.images / self.wall_s


def build_folders(base: Path, copies: int, width: int) -> dict[str, Path]:
    """`native` (the shared photos) and `{width}px` (scaled), each photo `copies` times."""
    photos = sorted(p for p in SHARED_IMAGES.iterdir() if p.suffix in IMAGE_SUFFIXES)
    native, big = base / "native", base / f"{width}px"
    native.mkdir()
    big.mkdir()
    for photo in photos:
        with Image.open(photo) as image:
            image.load()
            scaled = image.convert("RGB").resize(
                (width, round(image.height * width / image.width)), Image.Resampling.LANCZOS
            )
        for k in range(copies):
            name = f"{photo.stem}-{k}{photo.suffix}"
            shutil.copy(photo, native / name)
            if photo.suffix == ".jpg":
                scaled.save(big / name, quality=90)
            else:
                scaled.save(big / name)
    return {"native": native, f"{width}px": big}


def _count(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def _run(cmd: list[str], env: dict[str, str]) -> tuple[float, str, str]:
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return wall, done.stdout, done.stderr


def bgremove_runtime(env: dict[str, str], photo: Path, out: Path) -> str:
    """Process one photo (warming caches) and return how bgremove's u2net runs (its log)."""
    bgremove = str(Path(sys.executable).parent / "bgremove")
    _, _, stderr = _run([bgremove, "-v", "i", str(photo), str(out), "--model", "u2net"], env)
    match = re.search(r"U2-Net u2net: (\S+ \w+)", stderr)
    return match.group(1) if match else "unknown"


def time_bgremove(
    folder: Path, out: Path, env: dict[str, str], extra: list[str], label: str
) -> Run:
    bgremove = str(Path(sys.executable).parent / "bgremove")
    cmd = [bgremove, "p", str(folder), str(out), "--model", "u2net", "-q", *extra]
    wall, stdout, _ = _run(cmd, env)
    images = _count(out)
    match = re.search(r"([\d.]+) images/s", stdout)
    return Run(label, folder.name, images, wall, float(match.group(1)) if match else None)


def time_rembg(rembg: str, folder: Path, out: Path, env: dict[str, str]) -> Run:
    wall, _, _ = _run([rembg, "p", "-m", "u2net", str(folder), str(out)], env)
    return Run("rembg p", folder.name, _count(out), wall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=3, help="copies of each photo")
    parser.add_argument("--width", type=int, default=3000, help="width of the large folder")
    parser.add_argument("--rembg", default=str(ROOT / ".venv-rembg" / "bin" / "rembg"))
    parser.add_argument("--u2net-home", type=Path, default=ROOT / ".models" / "u2net")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    if not (args.u2net_home / "u2net.onnx").is_file():
        raise SystemExit(f"no u2net.onnx in {args.u2net_home}: run `bgremove fetch` first")

    env = {
        **os.environ,
        "U2NET_HOME": str(args.u2net_home),
        "BG_REMOVAL_U2NET_HOME": str(args.u2net_home),
        "BG_REMOVAL_U2NET_MODEL": "u2net",
        "BG_REMOVAL_U2NET_ALLOW_DOWNLOAD": "false",
    }
    load_before = os.getloadavg()
    print(f"CPU: {cpu_description()} ({usable_cpus()} usable CPUs)")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in load_before)}")
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as tmp:
        base = Path(tmp)
        folders = build_folders(base, args.copies, args.width)
        warm = base / "warm"
        warm.mkdir()
        shutil.copy(SHARED_IMAGES / "horse.jpg", warm / "horse.jpg")
        runtime = bgremove_runtime(env, warm / "horse.jpg", base / "warm.png")
        print(f"bgremove's u2net runtime: {runtime}")
        time_rembg(args.rembg, warm, base / "warm-r", env)
        for name, folder in folders.items():
            n = _count(folder)
            print(f"\n{name}: {n} images", flush=True)
            for label, extra in VARIANTS:
                run = time_bgremove(folder, base / f"out-{name}-{len(runs)}", env, extra, label)
                runs.append(run)
                print(f"  {label}: {run.wall_s:.1f} s, {run.images_per_s:.2f} images/s", flush=True)
            run = time_rembg(args.rembg, folder, base / f"out-{name}-rembg", env)
            runs.append(run)
            print(f"  rembg p: {run.wall_s:.1f} s, {run.images_per_s:.2f} images/s", flush=True)
            for r in runs[-3:]:
                if r.images != n:
                    raise SystemExit(f"{r.tool} wrote {r.images} results for {n} images")
    load_after = os.getloadavg()

    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in load_after)}")
    print("\n| folder | tool | images | wall s | images/s | vs rembg | images/s after load |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    rembg_rate = {r.folder: r.images_per_s for r in runs if r.tool == "rembg p"}
    for r in runs:
        steady = f"{r.steady_images_per_s:.2f}" if r.steady_images_per_s else "-"
        ratio = r.images_per_s / rembg_rate[r.folder]
        print(
            f"| {r.folder} | {r.tool} | {r.images} | {r.wall_s:.1f} | {r.images_per_s:.2f} "
            f"| {ratio:.2f}x | {steady} |"
        )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "cpu": cpu_description(),
                    "cpus": usable_cpus(),
                    "bgremove_runtime": runtime,
                    "load_before": load_before,
                    "load_after": load_after,
                    "runs": [{**asdict(r), "images_per_s": r.images_per_s} for r in runs],
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
