"""The API through real HTTP on a real Serve app: shapes, headers, statuses, errors."""

from __future__ import annotations

import io
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.support.http import health, post_image
from tests.support.shared import IMAGES


@pytest.fixture(scope="module")
def app(base_app: str) -> str:
    """The app on the base settings (the conftest's `base_app`, shared with test_fallback)."""
    return base_app


def _jpeg(size: tuple[int, int] = (320, 240), exif_orientation: int | None = None) -> bytes:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    out = io.BytesIO()
    if exif_orientation is None:
        image.save(out, "JPEG")
    else:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        image.save(out, "JPEG", exif=exif)
    return out.getvalue()


def _open(response: httpx.Response) -> Image.Image:
    image = Image.open(io.BytesIO(response.content))
    image.load()
    return image


def _assert_error(response: httpx.Response, status: int) -> dict[str, str]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"code", "message"}
    assert error["code"] and error["message"]
    return error


def test_health_is_healthy_with_both_groups(app: str) -> None:
    response = health(app)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy"
    assert body["model_name"] == "rmbg-2.0"
    assert body["model_loaded"] is True
    assert body["device"] == "cpu"
    assert body["gpu_available"] is False
    assert body["gpu_name"] is None
    assert body["styles_available"] == ["minimal", "mood", "street"]
    assert body["fallback"]["enabled"] is True
    assert body["fallback"]["loaded"] is True
    assert body["fallback"]["model_name"] == "u2netp"
    assert body["fallback"]["weights_source"] == "u2net_home"
    assert body["replicas"] == {"rmbg-2.0": 1, "u2net": 1}


def test_plain_cutout_is_rgba_at_input_size(app: str) -> None:
    response = post_image(app, _jpeg((320, 240)))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-model-used"] == "rmbg-2.0"
    assert "x-fallback-reason" not in response.headers
    assert response.headers["x-request-id"]
    assert float(response.headers["x-processing-time-ms"]) > 0
    image = _open(response)
    assert image.mode == "RGBA"
    assert image.size == (320, 240)


def test_request_id_is_echoed(app: str) -> None:
    response = post_image(app, _jpeg(), headers={"X-Request-Id": "req-abc-123"})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "req-abc-123"


def test_exif_orientation_is_honoured(app: str) -> None:
    # Orientation 6: stored landscape, displayed portrait.
    response = post_image(app, _jpeg((320, 240), exif_orientation=6))
    assert response.status_code == 200
    assert _open(response).size == (240, 320)


def test_ratio_without_style_gives_transparent_canvas(app: str) -> None:
    response = post_image(app, _jpeg((320, 240)), ratio="4:5")
    assert response.status_code == 200
    image = _open(response)
    assert image.mode == "RGBA"
    width, height = image.size
    assert width * 5 == height * 4
    assert width >= 320 and height >= 240


@pytest.mark.parametrize("style", ["minimal", "mood", "street"])
def test_styles_give_opaque_canvas_of_the_input_ratio(app: str, style: str) -> None:
    response = post_image(app, _jpeg((300, 200)), style=style)
    assert response.status_code == 200, response.text
    assert response.headers["x-model-used"] == "rmbg-2.0"
    image = _open(response)
    assert image.mode == "RGB"
    width, height = image.size
    assert abs(width / height - 1.5) < 0.01


def test_style_with_ratio_and_jpeg(app: str) -> None:
    response = post_image(app, _jpeg((300, 200)), style="minimal", ratio="1:1", format="jpeg")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    image = _open(response)
    assert image.size[0] == image.size[1]


def test_webp_keeps_alpha(app: str) -> None:
    response = post_image(app, _jpeg(), format="webp")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/webp"
    assert _open(response).mode == "RGBA"


@pytest.mark.parametrize("name", ["whisk.png", "horse.jpg", "hockey.png"])
def test_real_photos_in_each_format(app: str, name: str) -> None:
    data = (IMAGES / name).read_bytes()
    response = post_image(app, data, filename=name)
    assert response.status_code == 200
    with Image.open(IMAGES / name) as original:
        assert _open(response).size == original.size


def _encoded(fmt: str, mode: str, size: tuple[int, int] = (96, 64)) -> bytes:
    rng = np.random.default_rng(1)
    rgb = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    if mode == "I;16":
        grey = np.asarray(rgb.convert("L")).astype(np.uint16) * 257
        image = Image.frombytes("I;16", rgb.size, grey.astype("<u2").tobytes())
    else:
        image = rgb.convert(mode)
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


@pytest.mark.parametrize(
    ("fmt", "mode"),
    [
        ("WEBP", "RGBA"),
        ("BMP", "RGB"),
        ("TIFF", "RGB"),
        ("TIFF", "CMYK"),
        ("JPEG", "CMYK"),
        ("PNG", "LA"),
        ("PNG", "P"),
        ("PNG", "L"),
        ("PNG", "I;16"),
    ],
)
def test_supported_formats_and_modes(app: str, fmt: str, mode: str) -> None:
    response = post_image(app, _encoded(fmt, mode), filename=f"x.{fmt.lower()}")
    assert response.status_code == 200, response.text
    image = _open(response)
    assert image.mode == "RGBA"
    assert image.size == (96, 64)


@pytest.mark.parametrize(
    ("fields", "mentions"),
    [
        ({"ratio": "4-5"}, "W:H"),
        ({"ratio": "0:5"}, "1 to 100"),
        ({"style": "baroque"}, "minimal"),
        ({"format": "gif"}, "png"),
        ({"format": "jpeg"}, "png"),
        ({"edges": "soft"}, "refined"),
    ],
)
def test_bad_options_are_422_naming_allowed_values(
    app: str, fields: dict[str, str], mentions: str
) -> None:
    error = _assert_error(post_image(app, _jpeg(), **fields), 422)
    assert mentions in error["message"]


def test_missing_file_is_422(app: str) -> None:
    response = httpx.post(f"{app}/api/v1/remove-background", data={"style": "minimal"})
    _assert_error(response, 422)


@pytest.mark.parametrize(
    "data",
    [b"", b"definitely not an image", b"GIF89a" + b"\x00" * 64, _jpeg()[:200]],
    ids=["empty", "text", "gif", "truncated-jpeg"],
)
def test_unsupported_input_is_415(app: str, data: bytes) -> None:
    _assert_error(post_image(app, data), 415)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares huge dimensions; decoding it would need gigabytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    crc = struct.pack(">I", zlib.crc32(chunk))
    body = zlib.compress(b"\x00" * 1024)
    idat = b"IDAT" + body
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr))
        + chunk
        + crc
        + struct.pack(">I", len(body))
        + idat
        + struct.pack(">I", zlib.crc32(idat))
    )


def test_decompression_bomb_is_413(app: str) -> None:
    error = _assert_error(post_image(app, _png_header_only(60000, 60000), filename="b.png"), 413)
    assert "pixel" in error["message"]


def test_upload_over_byte_limit_is_413(tight_app: str, tight_upload_bytes: int) -> None:
    limit = tight_upload_bytes
    # Over the limit but within the multipart allowance: refused after parsing.
    _assert_error(post_image(tight_app, b"\xff" * (limit + 10_000)), 413)
    # Far over: refused from Content-Length, before the body is read.
    error = _assert_error(post_image(tight_app, b"\xff" * (2 * limit)), 413)
    assert "request body is" in error["message"]


def test_unknown_route_is_json_404(app: str) -> None:
    _assert_error(httpx.get(f"{app}/api/v1/nope"), 404)


def test_concurrent_requests_are_batched(app: str, deployer) -> None:
    from ray import serve

    data = _jpeg((256, 256))
    with ThreadPoolExecutor(max_workers=12) as pool:
        responses = list(pool.map(lambda _: post_image(app, data), range(12)))
    assert all(r.status_code == 200 for r in responses)
    assert {r.headers["x-model-used"] for r in responses} == {"rmbg-2.0"}
    status = serve.get_deployment_handle("RMBG2", deployer.app_name(app)).status.remote().result()
    batch_sizes = [int(size) for size in status["batches"]]
    assert max(batch_sizes) > 1, status["batches"]
