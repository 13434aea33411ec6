"""Decode untrusted image bytes into 8-bit RGB (+ optional alpha) numpy arrays.

Why it is written this way:
- Limits are checked cheaply and early: the byte limit before anything is parsed, the pixel limit
  from the header (``Image.open`` reads headers only) before any pixel data is decoded, so a
  decompression bomb costs a few microseconds. Limits are per call; Pillow's globals
  (``MAX_IMAGE_PIXELS``, ``LOAD_TRUNCATED_IMAGES``) are never touched. A header beyond Pillow's
  own hard bomb limit (2 x ``MAX_IMAGE_PIXELS``) is refused by Pillow first; it is reported the
  same way (ImageTooLargeError).
- Only the formats the service documents are tried (``formats=`` of ``Image.open``), so GIF, ICO,
  PSD, ... are UnsupportedImageError (415) even though Pillow could read them.
- Any decoder failure on untrusted input (truncated data, corrupt chunks) is a 415, never a 500.
- Copies are kept to the minimum: the arrays are views on the bytes Pillow hands out, so they are
  **read-only**; copy them (``np.array(x)``) before writing in place.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from imaging.errors import ImageTooLargeError, UnsupportedImageError

SUPPORTED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "BMP", "TIFF")
"""Pillow format names accepted by `decode_image`."""

_FORMAT_NAMES = {"MPO": "JPEG"}  # phone JPEGs with an MPF extension open as MPO: still JPEG.
_ALPHA_TO_RGBA = {"LA": "RGBA", "La": "RGBA", "RGBa": "RGBA", "PA": "RGBA"}
_SIXTEEN_BIT_GRAY = ("I;16", "I;16L", "I;16B", "I;16N", "I")


@dataclass(frozen=True, slots=True)
class DecodedImage:
    """A decoded image: upright (EXIF applied), first frame, 8-bit.

    ``rgb`` is HxWx3 uint8 C-contiguous; ``alpha`` is HxW uint8 when the input had real
    transparency (an alpha channel that is not fully opaque, or a transparent palette entry),
    else ``None``. ``format`` is the Pillow format name (JPEG, PNG, WEBP, BMP, TIFF).
    """

    rgb: np.ndarray
    alpha: np.ndarray | None
    format: str
    width: int
    height: int


#: EXIF orientations that turn the image a quarter: the upright size swaps W and H.
_QUARTER_TURNS = {5, 6, 7, 8}
_EXIF_ORIENTATION = 0x0112


def decode_image(
    data: bytes,
    *,
    max_bytes: int,
    max_pixels: int,
    before_decode: Callable[[int, int], None] | None = None,
) -> DecodedImage:
    """Decode ``data``; raise ImageTooLargeError or UnsupportedImageError for bad input.

    ``before_decode(width, height)`` gets the upright size from the header, before any pixel
    is decoded, so a caller can refuse (raise) or reserve resources for what follows.
    """
    size = len(data)
    if size > max_bytes:
        raise ImageTooLargeError(f"image is {size} bytes; the limit is {max_bytes} bytes")
    if size == 0:
        raise UnsupportedImageError("empty body: expected a JPEG, PNG, WebP, BMP or TIFF image")

    try:
        im = Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS)
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"image declares too many pixels ({exc})") from None
    except UnidentifiedImageError:
        raise UnsupportedImageError(
            "not a supported image: expected JPEG, PNG, WebP, BMP or TIFF"
        ) from None
    except Exception as exc:  # corrupt headers raise many types; all mean "not decodable"
        if isinstance(exc, MemoryError):
            raise
        raise UnsupportedImageError(f"cannot read image header: {exc}") from None

    with im:
        width, height = im.size
        if width <= 0 or height <= 0:
            raise UnsupportedImageError("image has no pixels")
        if width * height > max_pixels:
            raise ImageTooLargeError(
                f"image is {width}x{height} = {width * height} pixels; "
                f"the limit is {max_pixels} pixels"
            )
        fmt = _FORMAT_NAMES.get(im.format or "", im.format or "")
        if before_decode is not None:
            before_decode(*_upright_size(im))
        try:
            im.load()  # first frame only: Pillow opens multi-frame files positioned on frame 0
            rgb, alpha = _to_rgb8(_upright(im))
        except Exception as exc:  # truncated or corrupt pixel data
            if isinstance(exc, MemoryError):
                raise
            raise UnsupportedImageError(f"cannot decode {fmt} image: {exc}") from None

    h, w = rgb.shape[:2]
    return DecodedImage(rgb=rgb, alpha=alpha, format=fmt, width=w, height=h)


def _upright_size(im: Image.Image) -> tuple[int, int]:
    """(W, H) after the EXIF orientation, read from the header only."""
    w, h = im.size
    orientation = None
    with contextlib.suppress(Exception):  # unreadable EXIF is ignored, as in _upright
        orientation = im.getexif().get(_EXIF_ORIENTATION)
    return (h, w) if orientation in _QUARTER_TURNS else (w, h)


def _upright(im: Image.Image) -> Image.Image:
    """Apply the EXIF orientation in place (no copy when there is nothing to do)."""
    with contextlib.suppress(Exception):  # unreadable EXIF must not reject a good image
        ImageOps.exif_transpose(im, in_place=True)
    return im


def _to_rgb8(im: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """Convert any opened mode to (HxWx3 uint8, HxW uint8 alpha or None)."""
    mode = im.mode
    if mode in _SIXTEEN_BIT_GRAY:
        gray = _scale_16_to_8(np.asarray(im))
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2)), None
    if mode == "F":
        gray = _scale_float_to_8(np.asarray(im))
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2)), None
    if mode == "P":
        has_alpha = "transparency" in im.info or (im.palette is not None and "A" in im.palette.mode)
        im = im.convert("RGBA" if has_alpha else "RGB")
        mode = im.mode
    elif mode in _ALPHA_TO_RGBA:
        im = im.convert("RGBA")
        mode = "RGBA"

    if mode == "RGB":
        return np.asarray(im), None
    if mode == "RGBA":
        alpha_im = im.getchannel("A")
        lo, _ = alpha_im.getextrema()
        alpha = None if lo == 255 else np.asarray(alpha_im)
        return np.asarray(im.convert("RGB")), alpha
    # L, 1, CMYK, YCbCr, LAB, HSV, RGBX, ...: Pillow knows the colour maths.
    return np.asarray(im.convert("RGB")), None


def _scale_16_to_8(a: np.ndarray) -> np.ndarray:
    """Map 0..65535 to 0..255 with rounding (v * 255 / 65535), clamping out-of-range 'I' values."""
    v = a.astype(np.uint32) if a.dtype.kind == "u" else np.clip(a, 0, 65535).astype(np.uint32)
    return ((v * 255 + 32767) // 65535).astype(np.uint8)


def _scale_float_to_8(a: np.ndarray) -> np.ndarray:
    """Float images: 0..1 data is scaled to 0..255, anything else is clipped to 0..255."""
    a = np.nan_to_num(a.astype(np.float32, copy=False))
    if a.size and float(a.max()) <= 1.0:
        a = a * 255.0
    return np.clip(a + 0.5, 0, 255).astype(np.uint8)
