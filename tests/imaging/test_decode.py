"""decode_image: every supported mode and format, limits, and refusals."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image

from imaging.decode import DecodedImage, decode_image
from imaging.errors import ImageTooLargeError, UnsupportedImageError
from tests.support.png import lying_png, png_bytes
from tests.support.shared import PHOTO_NAMES, photo

LIMITS = {"max_bytes": 20_000_000, "max_pixels": 40_000_000}


def _save(im: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _gradient(w: int = 40, h: int = 30) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 6, y * 8, (x + y) * 3], axis=2).astype(np.uint8)


def _check(d: DecodedImage, w: int, h: int) -> None:
    assert (d.width, d.height) == (w, h)
    assert d.rgb.shape == (h, w, 3) and d.rgb.dtype == np.uint8
    assert d.rgb.flags["C_CONTIGUOUS"]
    if d.alpha is not None:
        assert d.alpha.shape == (h, w) and d.alpha.dtype == np.uint8


@pytest.mark.parametrize(
    ("fmt", "kw"),
    [("PNG", {}), ("BMP", {}), ("TIFF", {}), ("WEBP", {"lossless": True})],
)
def test_lossless_rgb_formats_round_trip(fmt: str, kw: dict[str, object]) -> None:
    rgb = _gradient()
    d = decode_image(_save(Image.fromarray(rgb), fmt, **kw), **LIMITS)
    _check(d, 40, 30)
    assert d.format == fmt
    assert d.alpha is None
    np.testing.assert_array_equal(d.rgb, rgb)


def test_jpeg_rgb() -> None:
    rgb = np.full((30, 40, 3), (200, 100, 50), np.uint8)
    d = decode_image(_save(Image.fromarray(rgb), "JPEG", quality=95), **LIMITS)
    _check(d, 40, 30)
    assert d.format == "JPEG" and d.alpha is None
    assert np.abs(d.rgb.astype(int) - rgb).max() <= 3


def test_cmyk_jpeg_gives_rgb() -> None:
    im = Image.new("CMYK", (20, 10), (0, 255, 255, 0))  # pure red in CMYK
    d = decode_image(_save(im, "JPEG", quality=95), **LIMITS)
    _check(d, 20, 10)
    r, g, b = d.rgb[5, 10].astype(int)
    assert r > 240 and g < 15 and b < 15


def test_grayscale_l() -> None:
    gray = np.arange(200, dtype=np.uint8).reshape(10, 20)
    d = decode_image(_save(Image.fromarray(gray), "PNG"), **LIMITS)
    _check(d, 20, 10)
    np.testing.assert_array_equal(d.rgb, np.repeat(gray[:, :, None], 3, axis=2))


def test_la_keeps_alpha() -> None:
    im = Image.new("LA", (8, 6), (90, 255))
    im.putpixel((1, 1), (90, 0))
    im.putpixel((2, 1), (90, 128))
    d = decode_image(_save(im, "PNG"), **LIMITS)
    _check(d, 8, 6)
    assert d.alpha is not None
    assert (d.alpha[1, 1], d.alpha[1, 2], d.alpha[0, 0]) == (0, 128, 255)
    assert tuple(d.rgb[0, 0]) == (90, 90, 90)


def test_rgba_keeps_alpha_and_opaque_rgba_has_none() -> None:
    rgba = np.dstack([_gradient(), np.full((30, 40), 255, np.uint8)])
    rgba[0, :5, 3] = 0
    d = decode_image(_save(Image.fromarray(rgba), "PNG"), **LIMITS)
    _check(d, 40, 30)
    np.testing.assert_array_equal(d.rgb, rgba[:, :, :3])
    assert d.alpha is not None
    np.testing.assert_array_equal(d.alpha, rgba[:, :, 3])
    rgba[:, :, 3] = 255
    assert decode_image(_save(Image.fromarray(rgba), "PNG"), **LIMITS).alpha is None


def test_palette_with_and_without_transparency() -> None:
    im = Image.new("P", (10, 10), 1)
    im.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    im.putpixel((0, 0), 2)
    plain = decode_image(_save(im, "PNG"), **LIMITS)
    _check(plain, 10, 10)
    assert plain.alpha is None
    assert tuple(plain.rgb[5, 5]) == (255, 0, 0) and tuple(plain.rgb[0, 0]) == (0, 0, 255)

    trans = decode_image(_save(im, "PNG", transparency=2), **LIMITS)
    _check(trans, 10, 10)
    assert trans.alpha is not None
    assert trans.alpha[0, 0] == 0 and trans.alpha[5, 5] == 255


def test_16bit_gray_png_is_scaled_not_clipped() -> None:
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    d = decode_image(png_bytes(values), **LIMITS)
    _check(d, 4, 1)
    np.testing.assert_array_equal(d.rgb[0, :, 0], [0, 1, 128, 255])
    np.testing.assert_array_equal(d.rgb[0, :, 0], d.rgb[0, :, 2])


def test_16bit_tiff_i16() -> None:
    values = np.array([[0, 1000, 40000, 65535]], dtype=np.uint16)
    im = Image.fromarray(values)
    assert im.mode == "I;16"
    d = decode_image(_save(im, "TIFF"), **LIMITS)
    np.testing.assert_array_equal(d.rgb[0, :, 1], [0, 4, 156, 255])


def test_mode_i_png_is_scaled() -> None:
    im = Image.fromarray(np.array([[0, 65535, 32768]], dtype=np.int32), mode="I")
    d = decode_image(_save(im, "TIFF"), **LIMITS)
    np.testing.assert_array_equal(d.rgb[0, :, 0], [0, 255, 128])


def test_48bit_rgb_png() -> None:
    px = np.array([[[65535, 0, 32896], [257, 65535, 0]]], dtype=np.uint16)
    d = decode_image(png_bytes(px), **LIMITS)
    _check(d, 2, 1)
    assert d.alpha is None
    np.testing.assert_allclose(d.rgb.astype(int), np.round(px / 257), atol=1)


def test_64bit_rgba_png() -> None:
    px = np.array([[[65535, 0, 0, 65535], [0, 65535, 0, 0], [0, 0, 65535, 32896]]], np.uint16)
    d = decode_image(png_bytes(px), **LIMITS)
    _check(d, 3, 1)
    assert d.alpha is not None
    np.testing.assert_allclose(d.alpha[0].astype(int), [255, 0, 128], atol=1)
    np.testing.assert_allclose(
        d.rgb[0].astype(int), [[255, 0, 0], [0, 255, 0], [0, 0, 255]], atol=1
    )


def test_exif_orientation_swaps_dimensions() -> None:
    rgb = np.zeros((20, 40, 3), np.uint8)
    rgb[:, :20] = (255, 0, 0)  # left half red, right half blue
    rgb[:, 20:] = (0, 0, 255)
    im = Image.fromarray(rgb)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 CW to display
    d = decode_image(_save(im, "JPEG", quality=95, exif=exif), **LIMITS)
    _check(d, 20, 40)
    assert d.rgb[5, 10, 0] > 200 and d.rgb[5, 10, 2] < 50  # top is the former left (red)
    assert d.rgb[35, 10, 2] > 200 and d.rgb[35, 10, 0] < 50


def test_animated_webp_first_frame() -> None:
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    data = _save(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    d = decode_image(data, **LIMITS)
    _check(d, 16, 16)
    assert tuple(d.rgb[8, 8]) == (255, 0, 0)
    assert d.alpha is None


def test_multipage_tiff_first_frame() -> None:
    frames = [Image.new("RGB", (12, 9), c) for c in ((10, 20, 30), (200, 200, 200))]
    d = decode_image(_save(frames[0], "TIFF", save_all=True, append_images=frames[1:]), **LIMITS)
    _check(d, 12, 9)
    assert tuple(d.rgb[0, 0]) == (10, 20, 30)


def test_byte_limit_checked_first() -> None:
    with pytest.raises(ImageTooLargeError) as exc:
        decode_image(b"not even an image" * 10, max_bytes=100, max_pixels=10)
    assert exc.value.code == "image_too_large"


def test_pixel_limit() -> None:
    data = _save(Image.new("RGB", (100, 100)), "PNG")
    decode_image(data, max_bytes=10**6, max_pixels=10_000)
    with pytest.raises(ImageTooLargeError):
        decode_image(data, max_bytes=10**6, max_pixels=9_999)


@pytest.mark.parametrize("side", [9_000, 50_000])
def test_bomb_header_refused_without_decoding(side: int) -> None:
    data = lying_png(side, side)
    assert len(data) < 200
    t = time.perf_counter()
    with pytest.raises(ImageTooLargeError):
        decode_image(data, **LIMITS)
    assert time.perf_counter() - t < 0.5


def test_pixel_limit_not_from_pillow_globals() -> None:
    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageTooLargeError):
        decode_image(lying_png(5_000, 5_000), max_bytes=10**6, max_pixels=1_000_000)
    assert before == Image.MAX_IMAGE_PIXELS


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello world, definitely not an image",
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 40,
        b"\xff\xd8\xff" + b"\x00" * 10,
    ],
    ids=["empty", "garbage", "png-magic-garbage", "jpeg-magic-garbage"],
)
def test_garbage_is_unsupported(data: bytes) -> None:
    with pytest.raises(UnsupportedImageError) as exc:
        decode_image(data, **LIMITS)
    assert exc.value.code == "unsupported_image"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_is_unsupported(fmt: str) -> None:
    rng = np.random.default_rng(0)
    noisy = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    data = _save(noisy, fmt)
    with pytest.raises(UnsupportedImageError):
        decode_image(data[: len(data) // 2], **LIMITS)


@pytest.mark.parametrize("fmt", ["GIF", "ICO", "PPM"])
def test_other_formats_are_unsupported(fmt: str) -> None:
    data = _save(Image.new("RGB", (16, 16), (1, 2, 3)), fmt)
    with pytest.raises(UnsupportedImageError):
        decode_image(data, **LIMITS)


@pytest.mark.usefixtures("shared_data")
def test_real_photos_decode() -> None:
    for name in PHOTO_NAMES:
        d = decode_image(photo(name).read_bytes(), **LIMITS)
        assert d.rgb.shape == (d.height, d.width, 3)
