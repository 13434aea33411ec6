#!/usr/bin/env python
"""Side by side: U2-Net and RMBG-2.0 on 5 photos from a folder, with timings.

Writes test_results/benchmark_comparison/: `grid.png` (rows: photos; columns:
original, U2-Net cut-out, RMBG-2.0 cut-out, on a checkerboard), each cut-out,
and `timings.md`. RMBG-2.0 runs when its weights load (`--rmbg-path` or the
hub); otherwise its column says why. Runs in-process and offline.

usage: .venv/bin/python -m benchmarks.benchmark_comparison FOLDER [--count 5] [--rmbg-path DIR]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from benchmarks.model_loading import ROOT, add_model_arguments, load_rmbg, load_u2net
from imaging.compose import cutout
from imaging.decode import decode_image
from imaging.encode import encode_png

CELL = 320


def _checker(size: tuple[int, int], square: int = 16) -> Image.Image:
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    board = np.where(((yy // square) + (xx // square)) % 2 == 0, 235, 200).astype(np.uint8)
    return Image.fromarray(board).convert("RGB")


def _cell(image: Image.Image, label: str) -> Image.Image:
    """The image fitted into a CELL x CELL tile (transparency on a checkerboard), labelled."""
    image = image.copy()
    image.thumbnail((CELL, CELL - 20))
    tile = (
        _checker((CELL, CELL)) if image.mode == "RGBA" else Image.new("RGB", (CELL, CELL), "white")
    )
    offset = ((CELL - image.width) // 2, 20 + (CELL - 20 - image.height) // 2)
    tile.paste(image, offset, image if image.mode == "RGBA" else None)
    ImageDraw.Draw(tile).text((4, 4), label, fill=(0, 0, 0))
    return tile


def _note(text: str) -> Image.Image:
    tile = Image.new("RGB", (CELL, CELL), (245, 245, 245))
    draw = ImageDraw.Draw(tile)
    for i in range(0, len(text), 44):
        draw.text((6, 6 + 14 * (i // 44)), text[i : i + 44], fill=(120, 0, 0))
    return tile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--count", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "test_results" / "benchmark_comparison")
    add_model_arguments(parser)
    args = parser.parse_args()

    exts = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
    paths = sorted(p for p in args.folder.iterdir() if p.suffix.lower() in exts)[: args.count]
    if not paths:
        raise SystemExit(f"no images in {args.folder}")
    models = {}
    u2net, desc, load_s = load_u2net(args)
    models["u2net"] = u2net
    print(f"U2-Net: {desc} [{load_s:.1f} s]")
    rmbg, rmbg_desc, load_s = load_rmbg(args)
    print(f"RMBG-2.0: {rmbg_desc} [{load_s:.1f} s]")
    if rmbg is not None:
        models["rmbg-2.0"] = rmbg

    args.out.mkdir(parents=True, exist_ok=True)
    rows, timings = [], []
    for path in paths:
        decoded = decode_image(path.read_bytes(), max_bytes=1 << 30, max_pixels=200_000_000)
        original = Image.fromarray(decoded.rgb)
        row = [_cell(original, f"{path.name} {decoded.width}x{decoded.height}")]
        times: dict[str, float] = {}
        for name in ("u2net", "rmbg-2.0"):
            predictor = models.get(name)
            if predictor is None:
                row.append(_note(f"RMBG-2.0 {rmbg_desc}"))
                continue
            start = time.perf_counter()
            (mask,) = predictor.predict([decoded.rgb])
            times[name] = time.perf_counter() - start
            rgba = cutout(decoded.rgb, mask)
            (args.out / f"{path.stem}_{name}.png").write_bytes(encode_png(rgba))
            row.append(_cell(Image.fromarray(rgba, "RGBA"), f"{name} {times[name] * 1000:.0f} ms"))
        rows.append(row)
        timings.append((path.name, f"{decoded.width}x{decoded.height}", times))
        print(f"{path.name}: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in times.items()))

    grid = Image.new("RGB", (CELL * 3, CELL * len(rows)), "white")
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            grid.paste(tile, (c * CELL, r * CELL))
    grid.save(args.out / "grid.png")
    lines = ["| image | size | u2net ms | rmbg-2.0 ms |", "| --- | --- | --- | --- |"]
    for name, size, times in timings:
        rmbg_ms = f"{times['rmbg-2.0'] * 1000:.0f}" if "rmbg-2.0" in times else "n/a"
        lines.append(f"| {name} | {size} | {times['u2net'] * 1000:.0f} | {rmbg_ms} |")
    if rmbg is None:
        lines.append(f"\nRMBG-2.0 {rmbg_desc}")
    (args.out / "timings.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"saved {args.out / 'grid.png'}")


if __name__ == "__main__":
    main()
