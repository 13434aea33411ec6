#!/usr/bin/env python
"""Quick check of the RMBG-2.0 tier on one image: load, time, save the cut-out.

Runs in-process, offline with local paths (`--rmbg-path`, `--u2net-home`).
When RMBG-2.0 cannot load (no weights, gated, no GPU for `--device cuda`), it
says why and, like the service, falls back to U2-Net unless `--no-fallback`.
Results go to test_results/: `<stem>_<model>.png` (cut-out) and `_mask.png`.

usage: scripts/test_rmbg2_quick.py [IMAGE] [--rmbg-path DIR] [--no-fallback]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _models import ROOT, add_model_arguments, load_rmbg, load_u2net
from PIL import Image

from imaging.compose import cutout
from imaging.decode import decode_image
from imaging.encode import encode_png


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "image", nargs="?", type=Path, default=ROOT.parent / "shared" / "images" / "whisk.png"
    )
    parser.add_argument("--no-fallback", action="store_true", help="fail if RMBG-2.0 can't load")
    parser.add_argument("--runs", type=int, default=3, help="timed runs after one warm-up")
    parser.add_argument("--out", type=Path, default=ROOT / "test_results")
    add_model_arguments(parser)
    args = parser.parse_args()

    decoded = decode_image(args.image.read_bytes(), max_bytes=1 << 30, max_pixels=200_000_000)
    print(f"image: {args.image} ({decoded.width}x{decoded.height} {decoded.format})")
    predictor, desc, load_s = load_rmbg(args)
    model = "rmbg-2.0"
    print(f"RMBG-2.0: {desc} [{load_s:.1f} s]")
    if predictor is None:
        if args.no_fallback:
            return 1
        predictor, desc, load_s = load_u2net(args)
        model = "u2net"
        print(f"fallback: {desc} [{load_s:.1f} s]")

    predictor.predict([decoded.rgb])  # warm-up at this image's size
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        (mask,) = predictor.predict([decoded.rgb])
        times.append(time.perf_counter() - start)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"{args.image.stem}_{model}"
    (args.out / f"{stem}.png").write_bytes(encode_png(cutout(decoded.rgb, mask)))
    Image.fromarray(mask).save(args.out / f"{stem}_mask.png")
    best, median = min(times), sorted(times)[len(times) // 2]
    print(f"mask by {model}: best {best * 1000:.0f} ms, median {median * 1000:.0f} ms")
    print(f"alpha: mean {mask.mean():.1f}, {(mask > 127).mean() * 100:.1f}% foreground")
    print(f"saved {args.out / f'{stem}.png'} and {args.out / f'{stem}_mask.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
