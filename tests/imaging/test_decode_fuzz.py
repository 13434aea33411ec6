"""Fuzzing the decoder: whatever bytes arrive, the only outcomes are an image or an ImageError.

Bounded in time (a fixed number of examples, derandomized so CI is reproducible); the seeds are
real photos and every supported format, then mutated (bit flips, truncation, splices).
"""

from __future__ import annotations

import io
from functools import cache

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from imaging.decode import decode_image
from imaging.errors import ImageError
from tests.support.shared import photo as shared_photo

pytestmark = pytest.mark.usefixtures("shared_data")


@cache
def _seeds() -> list[bytes]:
    """Every supported format of a small real photo (read on first use, not at import)."""
    photo = Image.open(shared_photo("horse.jpg")).convert("RGB")
    photo.thumbnail((96, 96))
    seeds = []
    for fmt, mode in [
        ("JPEG", "RGB"),
        ("PNG", "RGBA"),
        ("WEBP", "RGB"),
        ("BMP", "RGB"),
        ("TIFF", "CMYK"),
        ("PNG", "P"),
    ]:
        out = io.BytesIO()
        photo.convert(mode).save(out, fmt)
        seeds.append(out.getvalue())
    return seeds


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(_seeds())))
    for _ in range(draw(st.integers(0, 8))):
        pos = draw(st.integers(0, len(data) - 1))
        data[pos] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    if draw(st.booleans()):
        data += draw(st.binary(max_size=64))
    return bytes(data)


@settings(
    max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(data=st.one_of(mutated(), st.binary(max_size=512)))
def test_decoder_only_returns_images_or_image_errors(data: bytes) -> None:
    try:
        decoded = decode_image(data, max_bytes=1_000_000, max_pixels=4_000_000)
    except ImageError:
        return
    assert decoded.rgb.dtype == np.uint8 and decoded.rgb.shape == (decoded.height, decoded.width, 3)
    assert decoded.alpha is None or decoded.alpha.shape == decoded.rgb.shape[:2]
