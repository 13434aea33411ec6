"""remove.bg's dialect without a service: its fields onto our options, its bodies, its error
shape and status mapping (the overload -> 429 drill included), the guard on its paths."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import zipfile
from collections.abc import Awaitable, Callable
from types import SimpleNamespace

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from PIL import Image
from starlette.testclient import TestClient

from deployments.dialects import removebg
from deployments.errors import (
    NoModelAvailableError,
    OverloadedError,
    UnauthorizedError,
    install_error_handlers,
)
from deployments.guard import MULTIPART_OVERHEAD_BYTES, RequestGuard
from imaging.compose import capped_size
from imaging.encode import encode_png
from imaging.errors import (
    ImageTooLargeError,
    InvalidOptionError,
    OutputTooLargeError,
    UnsupportedImageError,
)
from imaging.options import Channels, Margin, OutputFormat, RenderOptions
from imaging.pipeline import Limits, MaskOutcome, remove_background

#: remove.bg's official CLI (remove-bg-cli 2.0.3, lib/functions.js) with no flags: every field
#: sent, empty when unset; size, type, channels and format take its defaults
CLI_FIELDS = {
    "size": "auto",
    "type": "auto",
    "type_level": "",
    "format": "zip",
    "roi": "",
    "crop": "",
    "crop_margin": "",
    "scale": "",
    "position": "",
    "channels": "rgba",
    "add_shadow": "",
    "semitransparency": "",
    "bg_color": "",
}


def translate(**fields: str) -> RenderOptions:
    return removebg.translate(fields, bg_image=False)[0]


def refused(**fields: str) -> str:
    with pytest.raises(InvalidOptionError) as info:
        removebg.translate(fields, bg_image=False)
    return str(info.value)


# --- fields -> options -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "megapixels"),
    [
        ("preview", 0.25),
        ("small", 0.25),
        ("regular", 0.25),
        ("medium", 1.5),
        ("hd", 4.0),
        ("full", 25.0),
        ("4k", 25.0),
        ("auto", 25.0),
        ("50MP", 50.0),
    ],
)
def test_sizes_are_megapixel_caps(size: str, megapixels: float) -> None:
    assert translate(size=size).max_megapixels == megapixels


def test_preview_is_the_default_and_full_is_50_mp_in_a_zip() -> None:
    assert translate().max_megapixels == 0.25
    options, zipped = removebg.translate({"size": "full", "format": "zip"}, bg_image=False)
    assert zipped and options.max_megapixels == 50.0 and options.fmt is OutputFormat.PNG
    assert "allowed values are preview, full, 50MP, auto" in refused(size="huge")


def test_preview_of_remove_bgs_example_is_625x400_and_never_upscales() -> None:
    assert capped_size(1000, 640, 250_000) == (625, 400)
    assert capped_size(400, 300, 250_000) == (400, 300)
    for w, h in [(3001, 1999), (10000, 7), (7, 10000), (1234, 5678), (640, 480)]:
        cw, ch = capped_size(w, h, 250_000)
        assert cw * ch <= 250_000 and cw <= w and ch <= h
        assert abs(cw / ch - w / h) / (w / h) < 0.35  # the ratio, to a pixel's rounding


def test_format_auto_is_png_when_transparent_else_jpeg() -> None:
    assert translate().fmt is OutputFormat.PNG
    assert translate(format="auto", bg_color="81d4fa77").fmt is OutputFormat.PNG
    assert translate(bg_color="ffffff").fmt is OutputFormat.JPEG
    assert translate(channels="alpha").fmt is OutputFormat.JPEG
    assert removebg.translate({}, bg_image=True)[0].fmt is OutputFormat.JPEG
    assert translate(format="png", bg_color="white").fmt is OutputFormat.PNG
    assert translate(format="webp").fmt is OutputFormat.WEBP


def test_jpg_without_a_background_is_the_subject_on_white() -> None:
    options = translate(format="jpg")
    assert options.fmt is OutputFormat.JPEG and options.bg_color == (255, 255, 255, 255)
    assert "semi-transparent" in refused(format="jpg", bg_color="81d4fa77")


def test_colours_crop_and_channels() -> None:
    assert translate(bg_color="fff").bg_color == (255, 255, 255, 255)
    assert translate(bg_color="#81d4fa77").bg_color == (0x81, 0xD4, 0xFA, 0x77)
    assert translate(bg_color="green").bg_color == (0, 128, 0, 255)
    assert translate(channels="alpha").channels is Channels.ALPHA
    for margin in ("30px", "30", "30px 30px", "30px 30px 30px 30px"):
        options = translate(crop="true", crop_margin=margin)
        assert options.crop and options.crop_margin == Margin(30)
    # remove.bg: crop_margin "only has an effect when crop is true"
    assert translate(crop_margin="30px") == translate()


def test_fields_we_accept_and_ignore_change_nothing() -> None:
    same = translate(
        add_shadow="true",
        semitransparency="false",
        type="auto",
        type_level="latest",
        shadow_type="none",
        shadow_opacity="50",
        scale="original",
        position="original",
        roi="0% 0%  100% 100%",
    )
    assert same == translate()


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"scale": "50%"}, ["scale='50%'", "not supported", "original"]),
        ({"position": "center"}, ["position='center'", "not supported", "original"]),
        ({"roi": "10% 10% 90% 90%"}, ["region of interest", "0% 0% 100% 100%"]),
        ({"type": "person"}, ["type='person'", "type=auto"]),
        ({"type": "car"}, ["type='car'", "specialised models"]),
        ({"shadow_type": "drop"}, ["shadow_type='drop'", "shadow", "none"]),
        ({"shadow_type": "fuzzy"}, ["invalid shadow_type", "none, car, 3D, drop"]),
        ({"shadow_opacity": "150"}, ["invalid shadow_opacity", "0 to 100"]),
        ({"type_level": "3"}, ["invalid type_level", "none, 1, 2, latest"]),
        ({"crop": "true", "crop_margin": "10%"}, ["in % are not supported", "30px"]),
        ({"crop": "true", "crop_margin": "10px 20px"}, ["per side", "one value"]),
        ({"crop": "true", "crop_margin": "501px"}, ["500px"]),
        ({"format": "tiff"}, ["invalid format", "auto, png, jpg, webp, zip"]),
        ({"crop": "maybe"}, ["invalid crop", "true, false"]),
        ({"add_shadow": "sometimes"}, ["invalid add_shadow"]),
        ({"bg_color": "nocolour"}, ["invalid bg_color"]),
        ({"channels": "rgb"}, ["invalid channels", "rgba, alpha"]),
        ({"channels": "alpha", "bg_color": "fff"}, ["channels=alpha", "bg_color"]),
    ],
)
def test_what_we_cannot_honour_is_refused_saying_what_to_send(
    fields: dict[str, str], words: list[str]
) -> None:
    message = refused(**fields)
    for word in words:
        assert word in message, message


# --- bodies --------------------------------------------------------------------------------


def call(fields: dict[str, str], files: dict[str, bytes] | None = None) -> removebg.Call:
    return removebg._call(fields, files or {}, max_bytes=1000, json_answer=False)


def test_the_clis_request_empty_fields_unset() -> None:
    got = call(CLI_FIELDS, {"image_file": b"jpeg"})
    expected, _ = removebg.translate({"size": "auto", "format": "zip"}, bg_image=False)
    assert got.options == expected and got.zip and got.image == b"jpeg"
    assert got.image_url is None and got.background is None and got.background_url is None


def test_exactly_one_image_and_at_most_one_background() -> None:
    with pytest.raises(InvalidOptionError, match="exactly one of image_file, image_file_b64"):
        call({"size": "preview"})
    with pytest.raises(InvalidOptionError, match="got image_file, image_url"):
        call({"image_url": "http://127.0.0.1/x.jpg"}, {"image_file": b"x"})
    with pytest.raises(InvalidOptionError, match="at most one of bg_color, bg_image_file"):
        call({"image_url": "u", "bg_color": "fff", "bg_image_url": "v"})
    with pytest.raises(InvalidOptionError, match=r"must be a file upload.*image_file_b64"):
        call({"image_file": "aGVsbG8="})
    background = call({"image_url": "u", "bg_image_url": "v", "bg_color": ""})
    assert background.options.bg_image and background.background_url == "v"
    encoded = call({"image_file_b64": base64.b64encode(b"\x89PNG").decode()})
    assert encoded.image == b"\x89PNG"


def test_base64_is_decoded_strictly_and_bounded() -> None:
    data = bytes(range(256)) * 3
    text = base64.b64encode(data).decode()
    assert removebg.decode_base64(text, len(data)) == data
    wrapped = "\n".join(text[i : i + 76] for i in range(0, len(text), 76))
    assert removebg.decode_base64(wrapped, len(data)) == data
    for bad in ("data:image/png;base64," + text, text[:-2] + "!!", "abc", "é" * 8):
        with pytest.raises(InvalidOptionError, match="not valid base64"):
            removebg.decode_base64(bad, 2 * len(data))
    with pytest.raises(ImageTooLargeError, match=r"1024 characters.*765 bytes \(1020 characters"):
        removebg.decode_base64(text, len(data) - 3)
    with pytest.raises(ImageTooLargeError, match="holds 768 bytes; images are limited to 767"):
        removebg.decode_base64(text, len(data) - 1)


def test_json_values_become_form_text() -> None:
    fields = removebg.json_fields(
        b'{"size": "preview", "crop": false, "add_shadow": true, "shadow_opacity": 50,'
        b' "scale": null, "bg_color": "fff", "ratio": 0.5}'
    )
    assert fields == {
        "size": "preview",
        "crop": "false",
        "add_shadow": "true",
        "shadow_opacity": "50",
        "bg_color": "fff",
        "ratio": "0.5",
    }
    for body, words in [
        (b"[1]", "object of fields"),
        (b"{", "not valid JSON"),
        (b'{"size": ["full"]}', "'size' must be a string"),
    ]:
        with pytest.raises(InvalidOptionError, match=words):
            removebg.json_fields(body)


def test_accept_json() -> None:
    assert removebg.wants_json("application/json")
    assert removebg.wants_json("image/*, application/json;q=0.5")
    assert not removebg.wants_json("application/json;q=0")
    assert not removebg.wants_json("*/*") and not removebg.wants_json("")


def test_paths_below_the_apps_prefix() -> None:
    assert removebg.owns({"path": "/v1.0/removebg"})
    assert removebg.owns({"path": "/app/v1.0/account", "root_path": "/app"})
    assert not removebg.owns({"path": "/app/api/v1/remove-background", "root_path": "/app"})
    assert not removebg.owns({"path": "/v1.0removebg"})


# --- answers -------------------------------------------------------------------------------


def test_zip_holds_color_jpg_and_alpha_png_that_make_the_png() -> None:
    rgba = np.zeros((40, 60, 4), np.uint8)
    rgba[10:30, 20:50] = (200, 40, 10, 255)
    rgba[10:30, 19] = (200, 40, 10, 128)
    with zipfile.ZipFile(io.BytesIO(removebg.zip_result(encode_png(rgba)))) as archive:
        assert archive.namelist() == ["color.jpg", "alpha.png"]
        color = Image.open(io.BytesIO(archive.read("color.jpg")))
        alpha = Image.open(io.BytesIO(archive.read("alpha.png")))
    assert (color.format, color.mode, color.size) == ("JPEG", "RGB", (60, 40))
    assert (alpha.format, alpha.mode) == ("PNG", "L")
    assert np.array_equal(np.asarray(alpha), rgba[:, :, 3])
    assert np.abs(np.asarray(color)[15, 30].astype(int) - (200, 40, 10)).max() < 8
    opaque = removebg.zip_result(encode_png(rgba[:, :, :3].copy()))
    with zipfile.ZipFile(io.BytesIO(opaque)) as archive:
        assert np.asarray(Image.open(io.BytesIO(archive.read("alpha.png")))).min() == 255


def _photo_png(width: int, height: int) -> bytes:
    rng = np.random.default_rng(1)
    return encode_png(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))


def _square_masker(rgb: np.ndarray) -> MaskOutcome:
    """A subject in the middle half of the photo."""
    h, w = rgb.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    mask[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 255
    return MaskOutcome(mask, "test")


def test_the_pipeline_scales_down_and_says_where_the_subject_is() -> None:
    photo = _photo_png(1000, 640)
    result = remove_background(photo, translate(), _square_masker)
    assert result.output_size == (625, 400)
    left, top, right, bottom = result.foreground or (0, 0, 0, 0)
    assert abs(left - 156) <= 1 and abs(top - 100) <= 1
    assert abs(right - 469) <= 1 and abs(bottom - 300) <= 1
    cropped = remove_background(photo, translate(crop="true", crop_margin="10px"), _square_masker)
    w, h = cropped.output_size
    assert cropped.foreground == (10, 10, w - 10, h - 10)
    # the same cap through the native option: the same bytes
    native = RenderOptions.parse({"max_megapixels": "0.25"})
    assert remove_background(photo, native, _square_masker).body == result.body
    empty = remove_background(photo, translate(), lambda rgb: MaskOutcome(rgb[:, :, 0] * 0, "t"))
    assert empty.foreground is None


def test_the_size_cap_counts_in_the_output_budget_before_decoding() -> None:
    photo = _photo_png(2000, 1000)
    small = Limits(max_output_pixels=1_000_000)
    with pytest.raises(OutputTooLargeError, match="2000x1000"):
        remove_background(photo, translate(size="full"), _square_masker, limits=small)
    result = remove_background(photo, translate(size="preview"), _square_masker, limits=small)
    assert result.output_size == (707, 353)


# --- errors: remove.bg's shape and status codes --------------------------------------------


def test_error_mapping() -> None:
    forbidden = removebg.error_response(401, "unauthorized", "no key", {"WWW-Authenticate": "B"})
    assert forbidden.status_code == 403 and "www-authenticate" not in forbidden.headers
    assert forbidden.body == (
        b'{"errors":[{"title":"Authentication failed","code":"auth_failed","detail":"no key"}]}'
    )
    for status in (413, 415, 422, 400):
        assert removebg.error_response(status, "x", "m").status_code == 400
    assert removebg.error_response(503, "model_unavailable", "m").status_code == 503
    assert removebg.error_response(504, "timeout", "m").status_code == 504


def _app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    raising = {
        "overloaded": OverloadedError("busy: retry after 3 s", retry_after_s=3),
        "unavailable": NoModelAvailableError("no model", retry_after_s=5),
        "too_large": ImageTooLargeError("upload is over the limit of 10 bytes"),
        "unsupported": UnsupportedImageError("not an image"),
        "unauthorized": UnauthorizedError("the API key is not valid"),
    }

    def raiser(exc: Exception) -> Callable[[], Awaitable[None]]:
        async def route() -> None:
            raise exc

        return route

    for prefix in ("/v1.0", "/api/v1"):
        for name, exc in raising.items():
            app.add_api_route(f"{prefix}/{name}", raiser(exc), methods=["GET"])
    return app


def test_overload_is_429_with_rate_limit_headers_under_remove_bgs_paths() -> None:
    client = TestClient(_app())
    response = client.get("/v1.0/overloaded")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "3"
    assert response.headers["x-ratelimit-limit"] == "1"
    assert response.headers["x-ratelimit-remaining"] == "0"
    assert int(response.headers["x-ratelimit-reset"]) > 0
    (error,) = response.json()["errors"]
    assert error == {
        "title": "Rate limit exceeded",
        "code": "rate_limit_exceeded",
        "detail": "busy: retry after 3 s",
    }
    # the native API keeps its 503 + Retry-After, in its own shape
    native = client.get("/api/v1/overloaded")
    assert native.status_code == 503 and native.headers["retry-after"] == "3"
    assert native.json() == {"error": {"code": "overloaded", "message": "busy: retry after 3 s"}}
    assert "x-ratelimit-limit" not in native.headers


@pytest.mark.parametrize(
    ("name", "status", "native_status", "code"),
    [
        ("unavailable", 503, 503, "model_unavailable"),
        ("too_large", 400, 413, "image_too_large"),
        ("unsupported", 400, 415, "unsupported_image"),
        ("unauthorized", 403, 401, "auth_failed"),
    ],
)
def test_every_error_takes_the_shape_of_its_path(
    name: str, status: int, native_status: int, code: str
) -> None:
    client = TestClient(_app())
    response = client.get(f"/v1.0/{name}")
    assert response.status_code == status
    assert response.json()["errors"][0]["code"] == code
    assert client.get(f"/api/v1/{name}").status_code == native_status
    missing = client.get("/v1.0/nothing-here")
    assert missing.status_code == 404 and missing.json()["errors"][0]["code"] == "not_found"


def _guarded(max_upload_bytes: int = 1000) -> TestClient:
    async def ok(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        while (await receive()).get("more_body"):
            pass
        await PlainTextResponse("ok")(scope, receive, send)

    config = SimpleNamespace(
        cors_allow_origins=(),
        api_key_hashes=frozenset({hashlib.sha256(b"k").hexdigest()}),
        max_upload_bytes=max_upload_bytes,
    )
    return TestClient(RequestGuard(ok, config_of=lambda: config))


def test_the_guard_answers_remove_bgs_paths_in_its_shape() -> None:
    client = _guarded()
    for headers in ({}, {"X-Api-Key": "wrong"}, {"Authorization": "Bearer wrong"}):
        response = client.get("/v1.0/account", headers=headers)
        assert response.status_code == 403, headers
        assert response.json()["errors"][0]["code"] == "auth_failed"
    assert client.get("/api/v1/remove-background").status_code == 401
    for headers in ({"X-Api-Key": "k"}, {"Authorization": "Bearer k"}):
        assert client.get("/v1.0/account", headers=headers).text == "ok"


def test_base64_bodies_may_be_half_again_the_upload_limit_on_remove_bgs_paths() -> None:
    client = _guarded(max_upload_bytes=10_000)
    key = {"X-Api-Key": "k"}
    body = b"x" * (15_000 + MULTIPART_OVERHEAD_BYTES)
    assert client.post("/v1.0/removebg", content=body, headers=key).text == "ok"
    native = client.post("/api/v1/remove-background", content=body, headers=key)
    assert native.status_code == 413 and native.json()["error"]["code"] == "image_too_large"
    over = client.post("/v1.0/removebg", content=body + b"x", headers=key)
    assert over.status_code == 400
    (error,) = over.json()["errors"]
    assert error["code"] == "image_too_large" and "10000 bytes" in error["detail"]


def test_answers_carry_remove_bgs_headers_and_refuse_an_empty_mask() -> None:
    photo = _photo_png(400, 300)
    options, _ = removebg.translate({"size": "full"}, bg_image=False)
    result = remove_background(photo, options, _square_masker)
    call = removebg.Call(options, photo, None, None, None, zip=False, json=False)
    response = asyncio.run(removebg.answer(result, call, {"X-Model-Used": "test"}))
    assert response.body == result.body and response.media_type == "image/png"
    assert {k: response.headers[k] for k in ("x-width", "x-height", "x-model-used")} == {
        "x-width": "400",
        "x-height": "300",
        "x-model-used": "test",
    }
    assert response.headers["x-foreground-left"] == "100"
    assert response.headers["x-foreground-top"] == "75"
    assert response.headers["x-foreground-width"] == "200"
    assert response.headers["x-foreground-height"] == "150"
    assert response.headers["x-credits-charged"] == "0" and "x-type" not in response.headers
    empty = remove_background(photo, options, lambda rgb: MaskOutcome(rgb[:, :, 0] * 0, "t"))
    with pytest.raises(removebg.NoForegroundError, match="no foreground"):
        asyncio.run(removebg.answer(empty, call, {}))
