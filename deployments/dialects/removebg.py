"""remove.bg's HTTP API v1.0 on this service: its requests in, its answers and errors out.

A thin adapter: remove.bg's fields become one `RenderOptions`
(`removebg_options.translate`), the ingress runs the one pipeline under the same limits,
admission and fallback as the native endpoint, and
the result goes back as remove.bg answers it (image or JSON, X-* headers, a ZIP of
color.jpg + alpha.png). Fields we cannot honour are refused with a 400 saying what to send
instead, never answered with a silently different image; docs/coming-from-removebg.md has
the table. An empty field means "not set": remove.bg's CLI sends every field, empty when
unset. Errors under these paths take remove.bg's shape and status codes (`error_response`),
so remove.bg clients' retry logic (429 + Retry-After) works unchanged.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import time
import zipfile
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import Request
from fastapi.responses import JSONResponse, Response
from PIL import Image
from starlette.datastructures import UploadFile
from starlette.types import Scope

from deployments.dialects.removebg_options import translate
from imaging.encode import encode_image, encode_png
from imaging.errors import ImageError, ImageTooLargeError, InvalidOptionError
from imaging.options import OutputFormat, RenderOptions
from imaging.pipeline import Result

PREFIX = "/v1.0"
REMOVE_PATH = f"{PREFIX}/removebg"
ACCOUNT_PATH = f"{PREFIX}/account"

IMAGE_FIELDS = ("image_file", "image_file_b64", "image_url")
BACKGROUND_FIELDS = ("bg_color", "bg_image_file", "bg_image_url")
FILE_FIELDS = ("image_file", "bg_image_file")
#: Every field of remove.bg's API reference (v1.0); anything else is refused.
FIELDS = (
    *IMAGE_FIELDS,
    "size",
    "type",
    "type_level",
    "format",
    "roi",
    "crop",
    "crop_margin",
    "scale",
    "position",
    "channels",
    *BACKGROUND_FIELDS,
    "add_shadow",
    "semitransparency",
    "shadow_type",
    "shadow_opacity",
)

#: A JSON or urlencoded body carries the image in base64 (4/3 of its bytes, more where a
#: urlencoded body percent-encodes + and /): such bodies may be this much over the upload
#: limit; the image in them still gets the limit itself.
BODY_FACTOR = 1.5
MAX_FORM_FIELDS = 32
ZIP_COLOR, ZIP_ALPHA = "color.jpg", "alpha.png"
#: The headers remove.bg's answers carry besides ours (X-Type: never sent here, see `answer`).
ANSWER_HEADERS = (
    *(f"X-{h}" for h in ("Width", "Height", "Credits-Charged", "Type")),
    *(f"X-Foreground-{side}" for side in ("Top", "Left", "Width", "Height")),
    *(f"X-RateLimit-{h}" for h in ("Limit", "Remaining", "Reset")),
)
#: `GET /v1.0/account`: nothing is metered here (every answer says X-Credits-Charged: 0), so
#: the balance is zero and limits nothing.
ACCOUNT: dict[str, Any] = {
    "data": {
        "attributes": {
            "credits": {"total": 0, "subscription": 0, "payg": 0, "enterprise": 0},
            "api": {"free_calls": 0, "sizes": "all"},
        }
    }
}


class NoForegroundError(ImageError):
    """The mask is empty: remove.bg answers 400 `unknown_foreground`, not a blank image."""

    code = "unknown_foreground"


@dataclass(frozen=True)
class Call:
    """One remove.bg request, read and translated: what the ingress needs to serve it."""

    options: RenderOptions
    image: bytes | None
    image_url: str | None
    background: bytes | None
    background_url: str | None
    zip: bool
    json: bool


def owns(scope: Scope) -> bool:
    """Whether a request came through this dialect (its path, below the app's prefix)."""
    path, root = scope.get("path", ""), scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return path.startswith(PREFIX + "/")


def body_limit(max_upload_bytes: int) -> int:
    """Bytes a body on these paths may have (before multipart framing): see `BODY_FACTOR`."""
    return int(max_upload_bytes * BODY_FACTOR)


def base64_limit(max_bytes: int) -> int:
    """Characters of base64 that encode at most ``max_bytes`` bytes."""
    return 4 * -(-max_bytes // 3)


def decode_base64(text: str, max_bytes: int) -> bytes:
    """`image_file_b64`'s bytes: standard base64 (line breaks allowed), nothing else."""
    compact = text.replace("\r", "").replace("\n", "")
    limit = base64_limit(max_bytes)
    if len(compact) > limit:
        raise ImageTooLargeError(
            f"image_file_b64 has {len(compact)} characters; images are limited to {max_bytes} "
            f"bytes ({limit} characters of base64): send a smaller image"
        )
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidOptionError(
            f"image_file_b64 is not valid base64 ({exc}): send the image's bytes in standard "
            "base64 (A-Z, a-z, 0-9, + and /, padded with =), without a 'data:' prefix"
        ) from None
    if len(data) > max_bytes:
        raise ImageTooLargeError(
            f"image_file_b64 holds {len(data)} bytes; images are limited to {max_bytes} bytes: "
            "send a smaller image"
        )
    return data


def json_fields(body: bytes) -> dict[str, str]:
    """A JSON body's fields as the text a form would carry (true/false, numbers; null: unset)."""
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise InvalidOptionError(f"the body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidOptionError('the JSON body must be an object of fields, e.g. {"size": "auto"}')
    fields: dict[str, str] = {}
    for name, value in document.items():
        if value is None:
            continue
        if isinstance(value, bool):
            fields[name] = "true" if value else "false"
        elif isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
            fields[name] = str(int(value))
        elif isinstance(value, float):
            fields[name] = repr(value)
        elif isinstance(value, str):
            fields[name] = value
        else:
            raise InvalidOptionError(f"field {name!r} must be a string, number or boolean")
    return fields


def wants_json(accept: str) -> bool:
    """Whether `Accept` asks for remove.bg's JSON answer (`application/json`, q > 0)."""
    for item in accept.lower().split(","):
        media, *params = (part.strip() for part in item.split(";"))
        if media == "application/json":
            q = next((p.partition("=")[2].strip() for p in params if p.startswith("q")), "1")
            try:
                return float(q) > 0
            except ValueError:
                return True
    return False


ReadUpload = Callable[[UploadFile], Awaitable[bytes]]


async def read_call(request: Request, *, max_bytes: int, read_upload: ReadUpload) -> Call:
    """Read a remove.bg request (multipart, urlencoded or JSON) under the upload limit.

    ``read_upload`` reads a file part under that limit (the ingress's, shared with the
    native endpoint). Options are checked before any URL is fetched or image decoded.
    """
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    files: dict[str, bytes] = {}
    if media == "application/json":
        fields = json_fields(await request.body())
    elif media in ("multipart/form-data", "application/x-www-form-urlencoded"):
        async with request.form(
            max_files=len(FILE_FIELDS),
            max_fields=MAX_FORM_FIELDS,
            max_part_size=base64_limit(max_bytes) + 1024,
        ) as form:
            names = list(form.keys())
            _check_names(names)
            repeated = sorted({n for n in names if len(form.getlist(n)) > 1})
            if repeated:
                raise InvalidOptionError(f"send each field once: repeated {', '.join(repeated)}")
            fields = {}
            for name, value in form.items():
                if not isinstance(value, UploadFile):
                    fields[name] = value
                elif name not in FILE_FIELDS:
                    raise InvalidOptionError(f"{name} is a text field, not a file upload")
                else:
                    data = await read_upload(value)
                    if data or value.filename:  # an empty, unnamed file part: not set
                        files[name] = data
    else:
        raise InvalidOptionError(
            "send the request as multipart/form-data, application/x-www-form-urlencoded or "
            f"application/json, not {media or 'a body without Content-Type'!r}"
        )
    _check_names(fields)
    json_answer = wants_json(request.headers.get("accept", ""))
    return _call(fields, files, max_bytes=max_bytes, json_answer=json_answer)


def _check_names(names: Any) -> None:
    unknown = sorted(set(names) - set(FIELDS))
    if unknown:
        raise InvalidOptionError(
            f"unknown field(s) {', '.join(unknown)}; remove.bg's fields are {', '.join(FIELDS)}"
        )


def _call(
    fields: Mapping[str, str], files: Mapping[str, bytes], *, max_bytes: int, json_answer: bool
) -> Call:
    """Check which inputs were sent (exactly one image, at most one background), translate."""
    given = {k: v.strip() for k, v in fields.items() if v.strip()}
    texts = [n for n in FILE_FIELDS if n in given]
    if texts:
        raise InvalidOptionError(
            f"{texts[0]} must be a file upload (multipart/form-data)"
            + ("; to send base64, use image_file_b64" if texts[0] == "image_file" else "")
        )
    sources = [n for n in IMAGE_FIELDS if n in given or n in files]
    if len(sources) != 1:
        raise InvalidOptionError(
            f"send exactly one of {', '.join(IMAGE_FIELDS)}; got "
            f"{', '.join(sources) if sources else 'none'}"
        )
    backgrounds = [n for n in BACKGROUND_FIELDS if n in given or n in files]
    if len(backgrounds) > 1:
        raise InvalidOptionError(
            f"send at most one of {', '.join(BACKGROUND_FIELDS)}; got {', '.join(backgrounds)}"
        )
    options_fields = {k: v for k, v in given.items() if k not in IMAGE_FIELDS}
    options, zipped = translate(
        options_fields, bg_image=bool(backgrounds) and backgrounds[0] != "bg_color"
    )
    image = files.get("image_file")
    if "image_file_b64" in given:
        image = decode_base64(given["image_file_b64"], max_bytes)
    return Call(
        options=options,
        image=image,
        image_url=given.get("image_url"),
        background=files.get("bg_image_file"),
        background_url=given.get("bg_image_url"),
        zip=zipped,
        json=json_answer,
    )


def zip_result(png: bytes) -> bytes:
    """remove.bg's ZIP: color.jpg (the colours) and alpha.png (the matte; opaque when the
    result is), which together make the PNG."""
    with Image.open(io.BytesIO(png)) as im:
        im.load()
        alpha = im.getchannel("A") if im.mode == "RGBA" else Image.new("L", im.size, 255)
        color = im.convert("RGB") if im.mode in ("RGBA", "RGB") else im.convert("L")
    color_bytes, _ = encode_image(np.asarray(color), OutputFormat.JPEG)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(ZIP_COLOR, color_bytes)
        archive.writestr(ZIP_ALPHA, encode_png(np.asarray(alpha)))
    return buf.getvalue()


async def answer(result: Result, call: Call, headers: Mapping[str, str]) -> Response:
    """remove.bg's answer: the image (or ZIP), or `{"data": {...}}` for `Accept:
    application/json`, with its X-* headers besides ours (``headers``). No X-Type: this
    service does not classify the subject, and a guessed class would be wrong."""
    if result.foreground is None:
        raise NoForegroundError(
            "no foreground was found in the image (the mask is empty): send a photo with a "
            "clear subject"
        )
    left, top, right, bottom = result.foreground
    body, media_type = result.body, result.media_type
    if call.zip:
        body, media_type = await asyncio.to_thread(zip_result, body), "application/zip"
    box = {"top": top, "left": left, "width": right - left, "height": bottom - top}
    out = {
        **headers,
        "X-Width": str(result.output_size[0]),
        "X-Height": str(result.output_size[1]),
        **{f"X-Foreground-{k.title()}": str(v) for k, v in box.items()},
        "X-Credits-Charged": "0",
    }
    if call.json:
        foreground = {f"foreground_{k}": v for k, v in box.items()}
        data = {"result_b64": base64.b64encode(body).decode(), **foreground}
        return JSONResponse({"data": data}, headers=out)
    return Response(content=body, media_type=media_type, headers=out)


_TITLES = {
    "auth_failed": "Authentication failed",
    "rate_limit_exceeded": "Rate limit exceeded",
    "invalid_option": "Invalid parameters",
    "unsupported_image": "Unsupported image",
    "image_too_large": "File too large",
    "output_too_large": "Result too large",
    "unknown_foreground": "Could not identify foreground in image",
}


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """A native error (status, code, message, headers) as remove.bg answers one:
    `{"errors": [{"title", "code", "detail"}]}`; 401 -> 403 `auth_failed`; our backpressure
    (503 `overloaded`) -> 429 with Retry-After and X-RateLimit-*; 413, 415 and 422 -> 400
    (remove.bg's one status for bad input); the rest as they are."""
    out = dict(headers or {})
    if status == 401:
        status, code = 403, "auth_failed"
        out.pop("WWW-Authenticate", None)
    elif status == 503 and code == "overloaded":
        status, code = 429, "rate_limit_exceeded"
        retry = int(out.setdefault("Retry-After", "1"))
        # no quota here (admission is by load): "none left now, again after Retry-After"
        out.update(
            {
                "X-RateLimit-Limit": "1",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": str(int(time.time()) + retry),
            }
        )
    elif status in (413, 415, 422):
        status = 400
    title = _TITLES.get(code, code.replace("_", " ").capitalize())
    content = {"errors": [{"title": title, "code": code, "detail": message}]}
    return JSONResponse(status_code=status, content=content, headers=out or None)


def openapi_body() -> dict[str, Any]:
    """OpenAPI description of the request body (the route reads it itself, with limits)."""
    text = {n: {"type": "string"} for n in FIELDS if n not in FILE_FIELDS}
    files = {n: {"type": "string", "format": "binary"} for n in FILE_FIELDS}
    form = {"type": "object", "properties": {**files, **text}}
    plain = {"type": "object", "properties": text}
    return {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": form},
            "application/x-www-form-urlencoded": {"schema": plain},
            "application/json": {"schema": plain},
        },
    }
