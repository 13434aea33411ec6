"""Time PNG (and WebP) encoders on a large, realistic RGBA cut-out; print a markdown table.

The cut-out is a real photo (upscaled to ~7.4 MP by default) with a plausible subject mask:
dark or strongly red pixels (the bike in bike.jpg), smoothed and feathered, inside a subject
box, so it has holes, thin parts and soft edges like a model mask. RGB is zeroed under alpha 0,
as `imaging.compose.cutout` does. Each encoder's output is decoded back with Pillow and compared
with the input (exact for lossless); every figure comes from the same run, best of --repeat.

Encoders that are not installed are skipped, so the script runs with any subset:

    .venv/bin/python -m benchmarks.bench_png [--image PATH] [--width 3333] [--repeat 3]
"""

from __future__ import annotations

import argparse
import io
import platform
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from imaging.compose import cutout

SHARED_IMAGES = Path(__file__).resolve().parents[1].parent / "shared" / "images"
Encoder = Callable[[np.ndarray], bytes]


def make_cutout(path: Path, width: int, kind: str = "subject") -> np.ndarray:
    """Photo upscaled to ``width`` plus a mask -> RGBA cut-out.

    ``subject``: dark or red pixels in a subject box (the bike: thin parts, holes, ~25% opaque);
    ``dense``: a feathered ellipse over ~60% of the frame (a bulky product or a person).
    """
    im = Image.open(path).convert("RGB")
    height = round(im.height * width / im.width)
    im = im.resize((width, height), Image.Resampling.BICUBIC)
    rgb = np.asarray(im)
    if kind == "dense":
        yy, xx = np.ogrid[:height, :width]
        inside = ((yy - height / 2) / (0.45 * height)) ** 2 + (
            (xx - width / 2) / (0.45 * width)
        ) ** 2
        m = Image.fromarray(((inside < 1) * 255).astype(np.uint8)).filter(
            ImageFilter.GaussianBlur(3)
        )
        return cutout(rgb, np.asarray(m))
    r, g, b = (rgb[:, :, i].astype(np.int16) for i in range(3))
    lum = (r * 3 + g * 6 + b) // 10
    subject = (lum < 70) | (r - g > 60)
    box = np.zeros_like(subject)
    box[int(0.02 * height) : int(0.95 * height), int(0.15 * width) : int(0.92 * width)] = True
    m = Image.fromarray(((subject & box) * 255).astype(np.uint8))
    m = m.filter(ImageFilter.MedianFilter(5)).filter(ImageFilter.GaussianBlur(1.5))
    return cutout(rgb, np.asarray(m))


def _pillow(level: int) -> Encoder:
    def enc(a: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, "PNG", compress_level=level)
        return buf.getvalue()

    return enc


def _webp(**kw: object) -> Encoder:
    def enc(a: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, "WEBP", **kw)
        return buf.getvalue()

    return enc


def _numpy_png(compress: Callable[[bytes], bytes]) -> Encoder:
    """Hand-rolled writer (Up filter + a fast deflate) for reference, not for production."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (
            len(data).to_bytes(4, "big")
            + tag
            + data
            + zlib.crc32(data, zlib.crc32(tag)).to_bytes(4, "big")
        )

    def enc(a: np.ndarray) -> bytes:
        h, w, c = a.shape
        rows = np.empty((h, w * c + 1), np.uint8)
        rows[:, 0] = 2  # Up
        flat = a.reshape(h, w * c)
        rows[0, 1:] = flat[0]
        np.subtract(flat[1:], flat[:-1], out=rows[1:, 1:])
        ihdr = w.to_bytes(4, "big") + h.to_bytes(4, "big") + bytes([8, 6 if c == 4 else 2, 0, 0, 0])
        return (
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", compress(rows.tobytes()))
            + chunk(b"IEND", b"")
        )

    return enc


def encoders() -> tuple[dict[str, Encoder], dict[str, Encoder], list[str]]:
    """(lossless PNG encoders, WebP encoders, versions) for what is importable here."""
    png: dict[str, Encoder] = {
        "Pillow compress_level=6 (default)": _pillow(6),
        "Pillow compress_level=1": _pillow(1),
    }
    versions = [f"Pillow {Image.__version__}", f"numpy {np.__version__}"]
    try:
        import fpng

        versions.append(f"fpng {fpng.__version__}")
        png["fpng (py-fpng-nb) from_ndarray"] = lambda a: fpng.from_ndarray(a)
    except ImportError:
        pass
    try:
        import imagecodecs

        versions.append(f"imagecodecs {imagecodecs.__version__}")
        png["imagecodecs png level=1"] = lambda a: imagecodecs.png_encode(a, level=1)
        png["imagecodecs png level=1 RLE+SUB"] = lambda a: imagecodecs.png_encode(
            a, level=1, strategy=3, filter=16
        )
        png["imagecodecs spng level=1"] = lambda a: imagecodecs.spng_encode(a, level=1)
    except ImportError:
        pass
    try:
        import cv2

        versions.append(f"opencv {cv2.__version__}")
        png["opencv imencode level=1 (incl. RGBA->BGRA)"] = lambda a: cv2.imencode(
            ".png", cv2.cvtColor(a, cv2.COLOR_RGBA2BGRA), [cv2.IMWRITE_PNG_COMPRESSION, 1]
        )[1].tobytes()
    except ImportError:
        pass
    try:
        import pyvips

        versions.append(f"libvips {pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)}")

        def vips(a: np.ndarray) -> bytes:
            h, w, c = a.shape
            v = pyvips.Image.new_from_memory(a.tobytes(), w, h, c, "uchar")
            return v.pngsave_buffer(compression=1, filter="none")

        png["pyvips pngsave compression=1"] = vips
    except (ImportError, OSError):
        pass
    try:
        from isal import isal_zlib

        versions.append("isal (ISA-L)")
        png["numpy Up filter + isal level 1 (reference)"] = _numpy_png(
            lambda d: isal_zlib.compress(d, 1)
        )
    except ImportError:
        pass
    png["numpy Up filter + zlib level 1 (reference)"] = _numpy_png(lambda d: zlib.compress(d, 1))
    webp: dict[str, Encoder] = {
        "WebP lossy q=90 method=4 (alpha lossless)": _webp(quality=90, method=4),
        "WebP lossy q=90 method=0": _webp(quality=90, method=0),
        "WebP lossless method=0 quality=0 (fastest)": _webp(lossless=True, method=0, quality=0),
    }
    return png, webp, versions


def bench(name: str, enc: Encoder, a: np.ndarray, repeat: int, exact: bool) -> tuple[float, int]:
    data = enc(a)  # warm-up and correctness check
    back = np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))
    if exact and not np.array_equal(back, a):
        raise SystemExit(f"{name}: decoded output differs from input")
    if not exact and not np.array_equal(back[:, :, 3], a[:, :, 3]):
        print(f"note: {name}: alpha not exact", file=sys.stderr)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        enc(a)
        best = min(best, time.perf_counter() - t)
    return best, len(data)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", type=Path, default=SHARED_IMAGES / "bike.jpg")
    ap.add_argument("--width", type=int, default=3333, help="upscale the photo to this width")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--mask", choices=["subject", "dense"], action="append")
    args = ap.parse_args()
    png, webp, versions = encoders()
    print(f"{platform.python_version()} {platform.machine()}; " + ", ".join(versions))
    for kind in args.mask or ["subject", "dense"]:
        table(make_cutout(args.image, args.width, kind), kind, args, png, webp)


def table(
    a: np.ndarray,
    kind: str,
    args: argparse.Namespace,
    png: dict[str, Encoder],
    webp: dict[str, Encoder],
) -> None:
    h, w = a.shape[:2]
    cover = float((a[:, :, 3] > 0).mean())
    print()
    print(
        f"input: {args.image.name} upscaled to {w}x{h} ({w * h / 1e6:.1f} MP) RGBA, "
        f"{kind} mask, {cover:.0%} of pixels with alpha > 0; best of {args.repeat}"
    )
    print()
    print("| encoder | time (s) | vs Pillow level 1 | size (MB) | size vs Pillow level 1 |")
    print("| --- | ---: | ---: | ---: | ---: |")
    rows = [(n, *bench(n, e, a, args.repeat, True)) for n, e in png.items()]
    rows += [(n, *bench(n, e, a, args.repeat, False)) for n, e in webp.items()]
    base_t, base_s = next((t, s) for n, t, s in rows if n == "Pillow compress_level=1")
    for n, t, s in rows:
        print(f"| {n} | {t:.3f} | {t / base_t:.2f}x | {s / 1e6:.2f} | {s / base_s:.2f}x |")


if __name__ == "__main__":
    main()
