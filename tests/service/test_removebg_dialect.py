"""remove.bg's API v1.0 on a real Serve app, through real HTTP, with remove.bg's clients.

remove.bg's Python client from PyPI (`removebg` 0.04) runs unchanged, its endpoint pointed
at the test service; the official CLI's request (remove-bg-cli 2.0.3, `lib/functions.js`:
multipart, every field sent, empty when unset, format=zip) and the npm client's (`remove.bg`
1.3.0: JSON with base64 and `Accept: application/json`) are rebuilt byte for byte as those
clients send them (no Node here). Results are compared with the native endpoint's for the
equivalent options: one pipeline. Image URLs come from a loopback server in this module.
"""

from __future__ import annotations

import base64
import io
import json
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import removebg.removebg as removebg_client
from PIL import Image

from imaging.compose import subject_bbox
from tests.support.http import post_image
from tests.support.shared import IMAGES
from tests.support.stub_server import FileServer, file_server

#: remove-bg-cli 2.0.3 with no flags but the key: its defaults, every other field empty, in
#: the order it appends them after image_file
CLI_FIELDS = [
    ("size", "auto"),
    ("type", "auto"),
    ("type_level", ""),
    ("format", "zip"),
    ("roi", ""),
    ("crop", ""),
    ("crop_margin", ""),
    ("scale", ""),
    ("position", ""),
    ("channels", "rgba"),
    ("add_shadow", ""),
    ("semitransparency", ""),
    ("bg_color", ""),
]


def open_image(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def removebg_post(
    base: str, data: bytes | None = None, *, headers: dict[str, str] | None = None, **fields: str
) -> httpx.Response:
    files = {"image_file": ("photo.jpg", data, "image/jpeg")} if data is not None else None
    return httpx.post(
        f"{base}/v1.0/removebg", data=fields, files=files, headers=headers, timeout=120
    )


def error_of(response: httpx.Response, status: int) -> dict[str, str]:
    """remove.bg's error shape: {"errors": [{"title", "code", "detail"}]}."""
    assert response.status_code == status, response.text
    (error,) = response.json()["errors"]
    assert set(error) == {"title", "code", "detail"} and error["title"]
    return error


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real photo of 1000x640 (0.64 MP): remove.bg's preview of it is 625x400."""
    path = tmp_path_factory.mktemp("removebg") / "horse.jpg"
    with Image.open(IMAGES / "horse.jpg") as image:
        image.convert("RGB").resize((1000, 640)).save(path, "JPEG", quality=90)
    return path


@pytest.fixture(scope="module")
def image_server(photo: Path) -> Iterator[FileServer]:
    """The photo behind every URL of a loopback server (`tests.support.stub_server`)."""
    with file_server(photo.read_bytes()) as server:
        yield server


def test_the_pypi_client_runs_unchanged(
    u2netp_app: str, photo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(removebg_client, "API_ENDPOINT", f"{u2netp_app}/v1.0/removebg")
    client = removebg_client.RemoveBg("any-key", str(tmp_path / "errors.log"))
    local = tmp_path / "horse.jpg"
    local.write_bytes(photo.read_bytes())
    client.remove_background_from_img_file(str(local))  # size="regular": the preview
    upload = (tmp_path / "horse.jpg_no_bg.png").read_bytes()
    image = open_image(upload)
    assert (image.format, image.mode, image.size) == ("PNG", "RGBA", (625, 400))
    # its base64 call is an urlencoded form: the same image, the same bytes
    encoded = base64.b64encode(photo.read_bytes()).decode()
    client.remove_background_from_base64_img(encoded, new_file_name=str(tmp_path / "b64.png"))
    assert (tmp_path / "b64.png").read_bytes() == upload
    # bg_color with format auto: opaque, so a JPEG (remove.bg's rule), at full size
    client.remove_background_from_img_file(str(local), size="full", bg_color="81d4fa")
    image = open_image((tmp_path / "horse.jpg_no_bg.png").read_bytes())
    assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (1000, 640))


def _multipart(parts: list[tuple[str, str | tuple[str, bytes, str]]]) -> tuple[bytes, str]:
    """A multipart body with its parts in this order (as form-data, superagent's encoder,
    writes them), and its Content-Type."""
    boundary = f"--------------------------{uuid.uuid4().hex[:24]}"
    out = io.BytesIO()
    for name, value in parts:
        out.write(f"--{boundary}\r\n".encode())
        if isinstance(value, tuple):
            filename, data, media = value
            out.write(
                f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                f"Content-Type: {media}\r\n\r\n".encode()
            )
            out.write(data)
        else:
            out.write(f'Content-Disposition: form-data; name="{name}"\r\n\r\n{value}'.encode())
        out.write(b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def test_the_official_clis_request_gets_its_zip(u2netp_app: str, photo: Path) -> None:
    body, content_type = _multipart(
        [("image_file", ("horse.jpg", photo.read_bytes(), "image/jpeg")), *CLI_FIELDS]
    )
    headers = {
        "Content-Type": content_type,
        "X-Api-Key": "any-key",
        "User-Agent": "remove-bg-cli-2.0.3",
    }
    response = httpx.post(f"{u2netp_app}/v1.0/removebg", content=body, headers=headers, timeout=120)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    assert (response.headers["x-width"], response.headers["x-height"]) == ("1000", "640")
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert archive.namelist() == ["color.jpg", "alpha.png"]
        color = open_image(archive.read("color.jpg"))
        alpha = open_image(archive.read("alpha.png"))
    assert (color.format, color.mode, color.size) == ("JPEG", "RGB", (1000, 640))
    assert (alpha.format, alpha.mode, alpha.size) == ("PNG", "L", (1000, 640))
    # the CLI's zip2png composes the two: the native cut-out, its alpha exactly
    native = np.asarray(open_image(post_image(u2netp_app, photo.read_bytes()).content))
    assert np.array_equal(np.asarray(alpha), native[:, :, 3])
    visible = native[:, :, 3] == 255
    error = np.abs(np.asarray(color).astype(int) - native[:, :, :3])[visible]
    assert error.mean() < 4  # JPEG's loss only


def test_the_npm_clients_json_call(u2netp_app: str, photo: Path) -> None:
    # remove.bg 1.3.0, removeBackgroundFromImageBase64({base64img, apiKey}): its defaults,
    # the unset options dropped by JSON.stringify
    document = {
        "size": "preview",
        "type": "auto",
        "crop": False,
        "image_file_b64": base64.b64encode(photo.read_bytes()).decode(),
    }
    headers = {
        "X-Api-Key": "any-key",
        "Accept": "application/json",
        "Content-Type": "application/json",
    }
    response = httpx.post(
        f"{u2netp_app}/v1.0/removebg",
        content=json.dumps(document, separators=(",", ":")),
        headers=headers,
        timeout=120,
    )
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    result = open_image(base64.b64decode(data["result_b64"]))
    assert (result.format, result.mode, result.size) == ("PNG", "RGBA", (625, 400))
    # what the npm client reads from the headers
    h = response.headers
    assert (h["x-width"], h["x-height"], h["x-credits-charged"]) == ("625", "400", "0")
    assert "x-type" not in h  # no class is guessed
    assert h["x-model-used"] == "u2net" and h["x-processing-time-ms"] and h["x-request-id"]
    left, top, right, bottom = subject_bbox(np.asarray(result)[:, :, 3]) or (0, 0, 0, 0)
    box = {"top": top, "left": left, "width": right - left, "height": bottom - top}
    assert box["width"] > 100 and box["height"] > 100
    for side, value in box.items():
        assert data[f"foreground_{side}"] == value
        assert h[f"x-foreground-{side}"] == str(value)
    # the same request as an image answer: the same bytes
    image = removebg_post(u2netp_app, photo.read_bytes(), size="preview", type="auto")
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert image.content == base64.b64decode(data["result_b64"])


def test_equivalent_options_give_the_native_bytes(u2netp_app: str, photo: Path) -> None:
    data = photo.read_bytes()
    framed = removebg_post(
        u2netp_app,
        data,
        size="full",
        format="auto",
        crop="true",
        crop_margin="20px",
        bg_color="fff",
    )
    assert framed.status_code == 200, framed.text
    assert framed.headers["content-type"] == "image/jpeg"  # auto: opaque, so JPEG
    native = post_image(
        u2netp_app, data, crop="true", crop_margin="20px", bg_color="ffffff", format="jpeg"
    )
    assert native.status_code == 200 and framed.content == native.content
    mask = removebg_post(u2netp_app, data, channels="alpha", format="png")  # the preview
    native_mask = post_image(u2netp_app, data, channels="alpha", max_megapixels="0.25")
    assert mask.status_code == native_mask.status_code == 200
    assert mask.content == native_mask.content
    assert open_image(mask.content).size == (625, 400)


def test_image_urls_are_fetched_under_the_policy(
    dialects_app: str,
    u2netp_app: str,
    image_server: FileServer,
    photo: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base = image_server.base
    monkeypatch.setattr(removebg_client, "API_ENDPOINT", f"{dialects_app}/v1.0/removebg")
    client = removebg_client.RemoveBg("any-key", str(tmp_path / "errors.log"))
    out = tmp_path / "url.png"
    client.remove_background_from_img_url(f"{base}/horse.jpg", new_file_name=str(out))
    assert image_server.served == ["/horse.jpg"]
    upload = removebg_post(dialects_app, photo.read_bytes(), size="regular")
    assert upload.status_code == 200 and out.read_bytes() == upload.content
    # a background by URL: the native result with that image uploaded as the background
    data = photo.read_bytes()
    composed = removebg_post(dialects_app, data, size="full", bg_image_url=f"{base}/bg.jpg")
    assert composed.status_code == 200 and composed.headers["content-type"] == "image/jpeg"
    native = post_image(dialects_app, data, background=data, format="jpeg")
    assert native.status_code == 200 and composed.content == native.content
    # where URL fetching is off (the default), a 400 naming the setting
    off = removebg_post(u2netp_app, image_url=f"{base}/horse.jpg")
    error = error_of(off, 400)
    assert error["code"] == "url_fetch_disabled" and "url_fetch" in error["detail"]
    assert len(image_server.served) == 2  # nothing fetched for the refused call


@pytest.mark.parametrize(
    ("fields", "code", "words"),
    [
        ({"size": "huge"}, "invalid_option", "preview, full, 50MP, auto"),
        ({"scale": "50%"}, "invalid_option", "not supported here"),
        ({"type": "car"}, "invalid_option", "type=auto"),
        ({"image_url": "http://127.0.0.1/x.jpg"}, "invalid_option", "exactly one of"),
        ({"ratio": "1:1"}, "invalid_option", "unknown field(s) ratio"),
    ],
)
def test_bad_fields_are_400s_in_remove_bgs_shape(
    u2netp_app: str, fields: dict[str, str], code: str, words: str
) -> None:
    error = error_of(removebg_post(u2netp_app, b"not read", **fields), 400)
    assert error["code"] == code and words in error["detail"], error


def test_bad_images_are_400s_too(u2netp_app: str) -> None:
    assert error_of(removebg_post(u2netp_app, b"GIF89a"), 400)["code"] == "unsupported_image"
    nothing = error_of(removebg_post(u2netp_app, size="preview"), 400)
    assert "exactly one of image_file, image_file_b64, image_url" in nothing["detail"]
    bomb = Image.new("1", (12000, 12000))  # 144 MP declared, a few KB of PNG
    buf = io.BytesIO()
    bomb.save(buf, "PNG")
    too_large = error_of(removebg_post(u2netp_app, buf.getvalue()), 400)
    assert too_large["code"] == "image_too_large" and "pixel" in too_large["detail"]
    not_b64 = httpx.post(
        f"{u2netp_app}/v1.0/removebg", json={"image_file_b64": "data:image/png;base64,AAAA"}
    )
    assert "not valid base64" in error_of(not_b64, 400)["detail"]


def test_api_keys_and_the_account(keyed_app: str, keyed_app_key: str, photo: Path) -> None:
    with Image.open(photo) as image:
        buf = io.BytesIO()
        image.resize((200, 128)).save(buf, "JPEG")
    data = buf.getvalue()
    for headers in ({}, {"X-Api-Key": "wrong"}, {"Authorization": "Bearer wrong"}):
        refused = removebg_post(keyed_app, data, headers=headers)
        assert error_of(refused, 403)["code"] == "auth_failed"
        assert error_of(httpx.get(f"{keyed_app}/v1.0/account", headers=headers), 403)
    by_header = removebg_post(keyed_app, data, headers={"X-Api-Key": keyed_app_key})
    bearer = removebg_post(keyed_app, data, headers={"Authorization": f"Bearer {keyed_app_key}"})
    assert by_header.status_code == bearer.status_code == 200
    assert by_header.content == bearer.content
    account = httpx.get(f"{keyed_app}/v1.0/account", headers={"X-Api-Key": keyed_app_key})
    assert account.status_code == 200
    attributes = account.json()["data"]["attributes"]
    assert attributes["credits"]["total"] == 0 and attributes["api"]["sizes"] == "all"
