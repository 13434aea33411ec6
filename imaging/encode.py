"""Encode RGB/RGBA uint8 arrays into response bytes (PNG, WebP, JPEG).

Choices, with figures in docs/benchmarks.md ("PNG encoder") (``benchmarks/bench_png.py``):
- PNG: fpng (PyPI ``fpng``, the py-fpng-nb binding of Rich Geldreich's fpng) when installed.
  It writes standard 8-bit RGB/RGBA PNGs with a fixed, fast deflate: ~15-20x faster than
  Pillow ``compress_level=1`` on a 7.4 MP cut-out for ~5% larger files. Without it, Pillow
  ``compress_level=1`` (2x faster than Pillow's default level 6 for ~15% larger files).
- WebP: lossy, quality 90, method 0, with lossless alpha. It is the small-file option
  (~4x smaller than PNG on a cut-out) and method 0 is ~4x faster than libwebp's default
  method 4 for ~30% more bytes; the alpha plane stays exact, so edges keep the model's mask.
- JPEG: quality 90, only for opaque images (styled composites); RGBA raises InvalidOptionError.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from imaging.errors import InvalidOptionError
from imaging.formats import FORMATS as FORMATS  # the table, kept apart from the codecs
from imaging.formats import MEDIA_TYPES
from imaging.options import OutputFormat

try:  # optional fast PNG writer; Pillow level 1 is the fallback
    import fpng as _fpng
except ImportError:  # pragma: no cover - depends on the environment
    _fpng = None

PNG_FALLBACK_LEVEL = 1
WEBP_QUALITY = 90
WEBP_METHOD = 0
JPEG_QUALITY = 90


def png_backend() -> str:
    """Name of the PNG encoder in use, for logs and /health."""
    return "fpng" if _fpng is not None else f"pillow(compress_level={PNG_FALLBACK_LEVEL})"


def encode_image(pixels: np.ndarray, fmt: OutputFormat) -> tuple[bytes, str]:
    """Encode HxW (grey), HxWx3 (RGB) or HxWx4 (RGBA) uint8 pixels; return (bytes, media type).

    Grey (a mask alone) is written as 8-bit grey PNG/JPEG; WebP has no grey mode (RGB).
    """
    grey = pixels.ndim == 2
    if pixels.dtype != np.uint8 or not (grey or (pixels.ndim == 3 and pixels.shape[2] in (3, 4))):
        raise ValueError(
            f"pixels must be HxW, HxWx3 or HxWx4 uint8, got {pixels.shape} {pixels.dtype}"
        )
    fmt = OutputFormat(fmt)
    if fmt is OutputFormat.PNG:
        return encode_png(pixels), MEDIA_TYPES[fmt]
    if grey and fmt is OutputFormat.WEBP:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    if fmt is OutputFormat.JPEG and not grey and pixels.shape[2] == 4:
        raise InvalidOptionError(
            "format jpeg cannot carry transparency: use png or webp for a cut-out, "
            "or pick a style (minimal, mood, street) for an opaque image"
        )
    buf = io.BytesIO()
    im = Image.fromarray(pixels)
    if fmt is OutputFormat.WEBP:
        im.save(buf, "WEBP", quality=WEBP_QUALITY, method=WEBP_METHOD, alpha_quality=100)
    else:
        im.save(buf, "JPEG", quality=JPEG_QUALITY)
    return buf.getvalue(), MEDIA_TYPES[fmt]


def encode_png(pixels: np.ndarray) -> bytes:
    """PNG bytes of grey/RGB/RGBA uint8 pixels with the fastest encoder available."""
    if _fpng is not None and pixels.ndim == 3:
        return _fpng.from_ndarray(np.ascontiguousarray(pixels))
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG", compress_level=PNG_FALLBACK_LEVEL)
    return buf.getvalue()
