"""encode_image round trips."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from imaging.compose import cutout
from imaging.encode import FORMATS, encode_image, encode_png, png_backend
from imaging.errors import InvalidOptionError
from imaging.options import OutputFormat


def _rgba(w: int = 64, h: int = 48) -> np.ndarray:
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), np.uint8)
    mask[8:40, 10:50] = 255
    mask[20, 10:50] = 77
    return cutout(rgb, mask)


def _decode(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


@pytest.mark.parametrize("channels", [3, 4])
def test_png_round_trip_exact(channels: int) -> None:
    px = np.ascontiguousarray(_rgba()[:, :, :channels])
    data, media = encode_image(px, OutputFormat.PNG)
    assert media == "image/png" and data[:8] == b"\x89PNG\r\n\x1a\n"
    im = _decode(data)
    assert im.format == "PNG" and im.mode == ("RGBA" if channels == 4 else "RGB")
    np.testing.assert_array_equal(np.asarray(im), px)


def test_png_accepts_non_contiguous_view() -> None:
    px = _rgba()[:, ::2]
    np.testing.assert_array_equal(np.asarray(_decode(encode_png(px))), px)


def test_png_backend_named() -> None:
    assert png_backend().startswith(("fpng", "pillow"))


def test_webp_keeps_alpha_exact_and_rgb_close() -> None:
    px = _rgba()
    px[:, :, :3] = np.where(px[:, :, 3:] > 0, 150, 0)  # smooth colour: lossy stays close
    data, media = encode_image(px, OutputFormat.WEBP)
    assert media == "image/webp"
    im = _decode(data)
    assert im.format == "WEBP" and im.mode == "RGBA"
    back = np.asarray(im)
    np.testing.assert_array_equal(back[:, :, 3], px[:, :, 3])
    visible = px[:, :, 3] == 255
    assert np.abs(back[visible][:, :3].astype(int) - 150).max() <= 8


def test_webp_rgb() -> None:
    px = np.full((32, 32, 3), (10, 200, 30), np.uint8)
    data, _ = encode_image(px, OutputFormat.WEBP)
    im = _decode(data)
    assert im.mode == "RGB" and im.size == (32, 32)


def test_jpeg_opaque_ok_and_rgba_refused() -> None:
    px = np.full((32, 48, 3), (200, 120, 40), np.uint8)
    data, media = encode_image(px, OutputFormat.JPEG)
    assert media == "image/jpeg"
    back = np.asarray(_decode(data))
    assert back.shape == (32, 48, 3) and np.abs(back.astype(int) - px).max() <= 4
    with pytest.raises(InvalidOptionError) as exc:
        encode_image(_rgba(), OutputFormat.JPEG)
    assert "png" in str(exc.value) and "webp" in str(exc.value)


def test_bad_pixels_rejected() -> None:
    with pytest.raises(ValueError):
        encode_image(np.zeros((4, 4, 2), np.uint8), OutputFormat.PNG)
    with pytest.raises(ValueError):
        encode_image(np.zeros((4, 4, 3), np.float32), OutputFormat.PNG)


@pytest.mark.parametrize("fmt", list(OutputFormat))
def test_grey_mask_round_trip(fmt: OutputFormat) -> None:
    """channels=alpha: the mask alone, 8-bit grey where the format has grey (PNG, JPEG)."""
    mask = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (48, 1))
    data, _ = encode_image(mask, fmt)
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode == ("RGB" if fmt is OutputFormat.WEBP else "L")
        back = np.asarray(im.convert("L"), dtype=np.int16)
    tolerance = 0 if fmt is OutputFormat.PNG else 6
    assert np.abs(back - mask).max() <= tolerance


def test_png_pillow_fallback_round_trip(monkeypatch: pytest.MonkeyPatch) -> None:
    from imaging import encode

    monkeypatch.setattr(encode, "_fpng", None)
    assert encode.png_backend().startswith("pillow")
    px = _rgba()
    np.testing.assert_array_equal(np.asarray(_decode(encode.encode_png(px))), px)


@pytest.mark.parametrize("fmt", list(OutputFormat))
def test_every_format_is_in_the_table_and_labelled_as_encoded(fmt: OutputFormat) -> None:
    """The one format table (the CLI's suffixes and media types come from it) covers every
    format, with the media type `encode_image` returns and a suffix Pillow reads as it."""
    pixels = np.zeros((4, 4, 3), np.uint8)
    data, media = encode_image(pixels, fmt)
    info = FORMATS[fmt]
    assert media == info.media_type
    assert _decode(data).format == Image.registered_extensions()[info.suffix]
