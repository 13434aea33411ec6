"""Write one composite per style (plus the plain cut-out) for an image and its mask.

    .venv/bin/python scripts/make_style_samples.py PHOTO MASK.png OUT_DIR [--ratio 4:5]
        [--format png|webp|jpeg]

MASK is a grayscale PNG (white = subject), resized to the photo if needed. Files are named
``<photo stem>_<style>.<ext>`` and ``<photo stem>_cutout.png``; timings go to stdout.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from imaging.compose import compose_styled, cutout
from imaging.decode import decode_image
from imaging.encode import encode_image
from imaging.options import OutputFormat, Style, parse_format, parse_ratio


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("image", type=Path)
    ap.add_argument("mask", type=Path)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--ratio", default=None, help="W:H, e.g. 4:5 (default: the photo's)")
    ap.add_argument("--format", default="jpeg", help="png, webp or jpeg (styled outputs)")
    args = ap.parse_args()

    ratio = parse_ratio(args.ratio)
    fmt = parse_format(args.format)
    img = decode_image(args.image.read_bytes(), max_bytes=100_000_000, max_pixels=100_000_000)
    mask_im = Image.open(args.mask).convert("L")
    if mask_im.size != (img.width, img.height):
        mask_im = mask_im.resize((img.width, img.height), Image.Resampling.BILINEAR)
    mask = np.asarray(mask_im)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = args.image.stem

    data, _ = encode_image(cutout(img.rgb, mask, input_alpha=img.alpha), OutputFormat.PNG)
    (args.out_dir / f"{stem}_cutout.png").write_bytes(data)
    for style in Style:
        t = time.perf_counter()
        out = compose_styled(img.rgb, mask, style=style, ratio=ratio, input_alpha=img.alpha)
        dt = time.perf_counter() - t
        data, _ = encode_image(out, fmt)
        path = args.out_dir / f"{stem}_{style.value}.{fmt.value}"
        path.write_bytes(data)
        print(f"{path}: {out.shape[1]}x{out.shape[0]}, composed in {dt:.3f} s")


if __name__ == "__main__":
    main()
