"""rembg's server API (`rembg s`, 2.0.86) on a real Serve app, through real HTTP.

rembg's documented `curl` lines run verbatim (only the host and port, and the file or image
URL, substituted) with the real curl; their results are compared byte for byte with the
native endpoint's for the equivalent options: one pipeline. Image URLs are served by a
loopback server in this module; nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import struct
import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from deployments.settings import ServiceSettings
from tests.support.http import post_image
from tests.support.shared import IMAGES
from tests.support.stub_server import FileServer, file_server

#: rembg's README (2.0.86, "rembg `s`"), verbatim
CURL_URL = 'curl -s "http://localhost:7000/api/remove?url=http://input.png" -o output.png'
CURL_FILE = 'curl -s -F file=@/path/to/input.jpg "http://localhost:7000/api/remove" -o output.png'
#: rembg's README, "Color decontamination"
CURL_URL_DC = 'curl -s "http://localhost:7000/api/remove?url=...&dc=true" > output.png'
REMBG_BASE = "http://localhost:7000"


def curl(line: str, base: str, cwd: Path, **substitutions: str) -> bytes:
    """Run one of rembg's documented lines with our base URL (and the given placeholders
    replaced); returns what it wrote to output.png."""
    assert shutil.which("curl"), "these tests run rembg's documented curl lines: install curl"
    command = line.replace(REMBG_BASE, base)
    for placeholder, value in substitutions.items():
        assert re.fullmatch(r"[\w/.:-]+", value), value  # nothing the shell would read
        command = command.replace(placeholder, value)
    (cwd / "output.png").unlink(missing_ok=True)
    subprocess.run(["bash", "-c", command], cwd=cwd, check=True, timeout=120)
    return (cwd / "output.png").read_bytes()


def rembg_post(base: str, data: bytes, *, params=None, form=None, headers=None) -> httpx.Response:
    files = {"file": ("input.jpg", data, "image/jpeg")}
    return httpx.post(
        f"{base}/api/remove", params=params, data=form, files=files, headers=headers, timeout=120
    )


def error_of(response: httpx.Response, status: int) -> dict[str, str]:
    assert response.status_code == status, response.text
    return response.json()["error"]


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real photo (soft edges, so refined and raw edges differ)."""
    path = tmp_path_factory.mktemp("rembg") / "input.jpg"
    with Image.open(IMAGES / "horse.jpg") as image:
        image.convert("RGB").resize((240, 185)).save(path, "JPEG", quality=90)
    return path


@pytest.fixture(scope="module")
def image_server(photo: Path) -> Iterator[FileServer]:
    """The photo behind every URL of a loopback server (`tests.support.stub_server`)."""
    with file_server(photo.read_bytes()) as server:
        yield server


def test_documented_upload_is_the_native_raw_cutout(
    u2netp_app: str, photo: Path, tmp_path: Path
) -> None:
    out = curl(CURL_FILE, u2netp_app, tmp_path, **{"/path/to/input.jpg": str(photo)})
    image = Image.open(io.BytesIO(out))
    assert (image.format, image.mode, image.size) == ("PNG", "RGBA", (240, 185))
    # rembg's default cut-out is the photo's pixels under the mask: our edges=raw
    native = post_image(u2netp_app, photo.read_bytes(), edges="raw")
    assert native.status_code == 200 and out == native.content
    # and our headers on rembg's answer
    response = rembg_post(u2netp_app, photo.read_bytes())
    assert response.status_code == 200 and response.content == out
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-model-used"] == "u2net"
    assert "x-fallback-reason" not in response.headers
    assert response.headers["x-request-id"] and response.headers["x-processing-time-ms"]


def test_documented_url_lines_fetch_through_the_policy(
    dialects_app: str, image_server: FileServer, photo: Path, tmp_path: Path
) -> None:
    url = f"{image_server.base}/input.png"
    plain = curl(CURL_URL, dialects_app, tmp_path, **{"http://input.png": url})
    refined = curl(CURL_URL_DC, dialects_app, tmp_path, **{"...": url})
    assert image_server.served == ["/input.png", "/input.png"]
    # the fetched photo goes through the same pipeline as an upload of it
    data = photo.read_bytes()
    assert plain == post_image(dialects_app, data, edges="raw").content
    # dc=true is our refined edges, the native default
    assert refined == post_image(dialects_app, data).content
    assert refined != plain


def test_url_is_refused_where_the_policy_is_off(u2netp_app: str, tmp_path: Path) -> None:
    out = curl(CURL_URL, u2netp_app, tmp_path, **{"http://input.png": "http://127.0.0.1:9/x.png"})
    error = json.loads(out)["error"]
    assert error["code"] == "url_fetch_disabled"
    assert "url_fetch (BG_REMOVAL_URL_FETCH)" in error["message"]
    response = httpx.get(f"{u2netp_app}/api/remove", params={"url": "http://127.0.0.1:9/x.png"})
    assert error_of(response, 400) == error
    # no url at all: rembg's GET needs one
    message = error_of(httpx.get(f"{u2netp_app}/api/remove"), 422)["message"]
    assert "GET /api/remove?url=" in message


def test_equivalent_options_give_identical_bytes(u2netp_app: str, photo: Path) -> None:
    from rembg.bg import post_process  # not at the top: tests/test_heavy_imports.py

    data = photo.read_bytes()
    pairs = [
        ({"om": "true"}, {"channels": "alpha"}),
        ({"bgc": "255,255,255,255"}, {"bg_color": "ffffffff", "edges": "raw"}),
        ({"bgc": "255,255,255,255", "dc": "true"}, {"bg_color": "ffffffff"}),
        ({"om": "true", "ppm": "true"}, {"channels": "alpha", "post_process_mask": "true"}),
        ({"model": "u2netp", "dc": "true"}, {}),
    ]
    for rembg_params, native_fields in pairs:
        ours = rembg_post(u2netp_app, data, params=rembg_params)
        native = post_image(u2netp_app, data, **native_fields)
        assert ours.status_code == 200, (rembg_params, ours.text)
        assert ours.content == native.content, rembg_params
        assert ours.headers["x-model-used"] == "u2net"
    mask = Image.open(io.BytesIO(rembg_post(u2netp_app, data, params={"om": "1"}).content))
    assert mask.mode == "L"
    hard = Image.open(io.BytesIO(rembg_post(u2netp_app, data, params={"om": 1, "ppm": 1}).content))
    # ppm is rembg's own post-processing of the mask
    assert np.array_equal(np.asarray(hard), post_process(np.asarray(mask)))
    assert set(np.unique(np.asarray(hard))) <= {0, 255}


def test_parameters_in_the_query_or_the_form(u2netp_app: str, photo: Path) -> None:
    data = photo.read_bytes()
    in_query = rembg_post(u2netp_app, data, params={"om": "true", "model": "u2net"})
    in_form = rembg_post(u2netp_app, data, form={"om": "true", "model": "u2net"})
    split = rembg_post(u2netp_app, data, params={"model": "u2net"}, form={"om": "true"})
    assert in_query.status_code == in_form.status_code == split.status_code == 200
    assert in_query.content == in_form.content == split.content
    both = rembg_post(u2netp_app, data, params={"om": "true"}, form={"om": "false"})
    assert "om was sent twice with different values" in error_of(both, 422)["message"]
    unknown = rembg_post(u2netp_app, data, form={"only_mask": "true"})
    assert "unknown parameter 'only_mask'" in error_of(unknown, 422)["message"]


def test_unknown_model_is_refused_naming_ours(u2netp_app: str, photo: Path) -> None:
    response = rembg_post(u2netp_app, photo.read_bytes(), params={"model": "isnet-general-use"})
    error = error_of(response, 422)
    assert error["code"] == "invalid_option"
    assert "send bria-rmbg, u2net, u2netp" in error["message"]


def test_rmbg_on_a_u2net_only_app_falls_back_saying_why(u2netp_app: str, photo: Path) -> None:
    response = rembg_post(u2netp_app, photo.read_bytes(), form={"model": "bria-rmbg"})
    assert response.status_code == 200, response.text
    assert response.headers["x-model-used"] == "u2net"
    assert response.headers["x-fallback-reason"] == "not_deployed"


@pytest.mark.parametrize(
    ("params", "phrase"),
    [
        ({"a": "true"}, "a=true (alpha matting) is not served"),
        ({"vm": "true"}, "vm=true (ViTMatte refinement) is not served"),
        ({"extras": '{"model_path": "/tmp/m.onnx"}'}, "extras"),
        ({"af": "300"}, "invalid af '300'"),
        ({"bgc": "white"}, "invalid bgc 'white'"),
    ],
)
def test_unsupported_parameters_are_refused(
    u2netp_app: str, photo: Path, params: dict[str, str], phrase: str
) -> None:
    error = error_of(rembg_post(u2netp_app, photo.read_bytes(), params=params), 422)
    assert phrase in error["message"]


def test_byte_limit_refuses_before_the_body(u2netp_app: str, tmp_path: Path) -> None:
    limit = ServiceSettings.model_fields["max_upload_bytes"].default
    big = tmp_path / "input.jpg"
    with big.open("wb") as f:
        f.truncate(limit + 200_000)
    out = curl(CURL_FILE, u2netp_app, tmp_path, **{"/path/to/input.jpg": str(big)})
    error = json.loads(out)["error"]
    assert error["code"] == "image_too_large"
    # refused from Content-Length, before the body was read
    assert "request body is" in error["message"] and str(limit) in error["message"]


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height and holds one row: a decompression bomb."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (width + 1))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat)


def test_pixel_limit_refuses_before_decoding(u2netp_app: str) -> None:
    error = error_of(rembg_post(u2netp_app, _png_header_only(60000, 60000)), 413)
    assert error["code"] == "image_too_large" and "pixel" in error["message"]


def test_api_keys_guard_the_dialect(keyed_app: str, keyed_app_key: str, photo: Path) -> None:
    data = photo.read_bytes()
    refused = rembg_post(keyed_app, data)
    assert error_of(refused, 401)["code"] == "unauthorized"
    assert refused.headers["www-authenticate"].startswith("Bearer")
    by_header = rembg_post(keyed_app, data, headers={"X-Api-Key": keyed_app_key})
    bearer = rembg_post(keyed_app, data, headers={"Authorization": f"Bearer {keyed_app_key}"})
    assert by_header.status_code == bearer.status_code == 200
    assert by_header.content == bearer.content
    wrong = httpx.get(f"{keyed_app}/api/remove", params={"url": "http://127.0.0.1:9/x.png"})
    assert error_of(wrong, 401)["code"] == "unauthorized"
