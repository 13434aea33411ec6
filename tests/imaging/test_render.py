"""Output budgets: the result's size from the header alone, format limits, encoders at them."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image

from imaging.compose import compose_styled, cutout, fit_to_ratio
from imaging.decode import decode_image
from imaging.encode import encode_image
from imaging.errors import OutputTooLargeError
from imaging.options import OutputFormat, RenderOptions, Style
from imaging.render import FORMAT_MAX_SIDE, check_output, plan_output
from imaging.resize import ModelInputSpec

RNG = np.random.default_rng(3)


def _photo(w: int, h: int) -> np.ndarray:
    return RNG.integers(0, 255, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    ("size", "ratio", "style"),
    [
        ((300, 200), None, None),
        ((300, 200), (4, 5), None),
        ((301, 199), (16, 9), None),
        ((300, 200), None, Style.MINIMAL),
        ((300, 200), (1, 10), Style.MOOD),
        ((120, 900), (4, 5), Style.STREET),
    ],
)
def test_planned_size_matches_or_bounds_the_rendered_result(
    size: tuple[int, int], ratio: tuple[int, int] | None, style: Style | None
) -> None:
    w, h = size
    rgb = _photo(w, h)
    mask = np.zeros((h, w), np.uint8)
    mask[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 255
    options = RenderOptions(ratio=ratio, style=style)
    planned = plan_output(w, h, options)
    if style is None:
        pixels = cutout(rgb, mask)
        if ratio is not None:
            pixels = fit_to_ratio(pixels, ratio)
        assert (pixels.shape[1], pixels.shape[0]) == planned
    else:
        pixels = compose_styled(rgb, mask, style=style, ratio=ratio)
        assert pixels.shape[1] <= planned[0] and pixels.shape[0] <= planned[1]


def test_ratio_bomb_is_refused_from_its_size() -> None:
    options = RenderOptions.parse({"ratio": "1:10"})
    planned = plan_output(5000, 500, options)
    assert planned == (5000, 50000)
    with pytest.raises(OutputTooLargeError, match="max_output_pixels"):
        check_output(planned, options, 50_000_000)


@pytest.mark.parametrize("fmt", list(OutputFormat))
def test_each_format_side_limit(fmt: OutputFormat) -> None:
    style = "minimal" if fmt is OutputFormat.JPEG else None
    options = RenderOptions.parse({"style": style, "format": fmt.value})
    limit = FORMAT_MAX_SIDE[fmt]
    check_output((limit, 1), options, 10**9)
    with pytest.raises(OutputTooLargeError, match=str(limit)):
        check_output((limit + 1, 1), options, 10**9)


@pytest.mark.parametrize("fmt", list(OutputFormat))
def test_each_encoder_writes_its_largest_side(fmt: OutputFormat) -> None:
    """At the limit the file is valid and says its real size (fpng wraps beyond 65535)."""
    limit = FORMAT_MAX_SIDE[fmt]
    channels = 3 if fmt is OutputFormat.JPEG else 4
    pixels = RNG.integers(0, 255, (2, limit, channels), dtype=np.uint8)
    data, _ = encode_image(pixels, fmt)
    if fmt is OutputFormat.PNG:  # the IHDR width field, before Pillow's own limits
        assert struct.unpack(">I", data[16:20])[0] == limit
    image = Image.open(io.BytesIO(data))
    assert image.size == (limit, 2)


def test_before_decode_sees_the_upright_size() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: a 40x10 file is a 10x40 photo
    out = io.BytesIO()
    Image.fromarray(_photo(40, 10)).save(out, "JPEG", exif=exif)
    seen: list[tuple[int, int]] = []
    decoded = decode_image(
        out.getvalue(),
        max_bytes=10**6,
        max_pixels=10**6,
        before_decode=lambda w, h: seen.append((w, h)),
    )
    assert seen == [(10, 40)] == [(decoded.width, decoded.height)]


def test_before_decode_can_refuse_before_pixels_are_read() -> None:
    out = io.BytesIO()
    Image.fromarray(_photo(64, 64)).save(out, "PNG")
    data = out.getvalue()[:60]  # header only: decoding the pixels would fail

    def refuse(w: int, h: int) -> None:
        raise OutputTooLargeError(f"{w}x{h}")

    with pytest.raises(OutputTooLargeError, match="64x64"):
        decode_image(data, max_bytes=10**6, max_pixels=10**6, before_decode=refuse)


def test_model_input_spec_round_trip() -> None:
    spec = ModelInputSpec(320, 320, downscale="lanczos", reducing_gap=3.0, upscale="bicubic")
    assert ModelInputSpec.from_dict(spec.as_dict()) == spec
    rgb = _photo(1000, 600)
    small = spec.to_input(rgb)
    assert small.shape == (320, 320, 3)
    assert spec.to_input(small) is small
    mask = spec.to_size(np.full((320, 320), 200, np.uint8), 600, 1000)
    assert mask.shape == (600, 1000) and int(mask.min()) == 200
    with pytest.raises(ValueError, match="unknown resampling filter"):
        ModelInputSpec(1, 1, downscale="sinc")
