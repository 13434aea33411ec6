"""rembg's server API (`rembg s`, rembg 2.0.86): `GET|POST /api/remove`, on our pipeline.

A thin adapter: rembg's parameters become the native option fields, validated by
`RenderOptions.parse`, plus the model tier to ask first. The routes (`deployments.ingress`)
run the native endpoint's admission, budgets, routing and pipeline, so equivalent options
give identical bytes. rembg's clients send parameters in the query string, the form or
both (its POST reads `bgc` and `extras` from the query only): both are read here.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request

from imaging.errors import InvalidOptionError
from imaging.options import RenderOptions
from models.registry import RMBG, U2NET

PATH = "/api/remove"
FILE_FIELD = "file"
URL_PARAM = "url"

#: rembg's model names this service serves -> our tier (X-Model-Used names the tier; the
#: U2-Net tier runs the operator's `u2net_model` weights, u2net or u2netp)
MODELS: dict[str, str] = {"bria-rmbg": RMBG, "u2net": U2NET, "u2netp": U2NET}

#: rembg's parameters, as its server documents them (`rembg/commands/s_command.py`)
PARAMS: dict[str, str] = {
    "model": f"Model: {', '.join(MODELS)}; absent: the service's configured model.",
    "a": "Alpha matting: refused when true (use dc=true, our refined edges).",
    "af": "Alpha matting foreground threshold, 0-255 (only used with a).",
    "ab": "Alpha matting background threshold, 0-255 (only used with a).",
    "ae": "Alpha matting erode size, >= 0 (only used with a).",
    "om": "Only mask: the mask alone, as an 8-bit grey PNG.",
    "ppm": "Post-process the mask: opening, blur, threshold (a hard mask).",
    "dc": "Decontaminate edges: our refined edges (edges=refined).",
    "vm": "ViTMatte edge refinement: refused when true (use dc=true).",
    "bgc": "Background colour R,G,B,A (0-255 each), e.g. 255,255,255,255.",
    "extras": "rembg's session arguments as JSON: refused unless empty.",
}
GET_PARAMS = frozenset(PARAMS) | {URL_PARAM}
POST_PARAMS = frozenset(PARAMS)

_TRUE = {"1", "on", "t", "true", "y", "yes"}
_FALSE = {"0", "off", "f", "false", "n", "no"}


@dataclass(frozen=True)
class RembgRequest:
    """A rembg request in our terms: the render options and the tier to ask first (None:
    the configured primary)."""

    options: RenderOptions
    model: str | None = None


def collect(
    sources: Iterable[Iterable[tuple[str, str]]], allowed: frozenset[str]
) -> dict[str, str]:
    """One value per parameter from the query string and the form (rembg's clients send
    either, or both): a name sent again must carry the same value."""
    params: dict[str, str] = {}
    for source in sources:
        for name, value in source:
            if name not in allowed:
                raise InvalidOptionError(
                    f"unknown parameter {name!r}; rembg's /api/remove takes "
                    f"{', '.join(sorted(allowed))}"
                )
            if name in params and params[name].strip() != value.strip():
                raise InvalidOptionError(
                    f"{name} was sent twice with different values ({params[name]!r}, "
                    f"{value!r}): send it once, in the query string or the form"
                )
            params[name] = value
    return params


def _bool(name: str, text: str | None) -> bool:
    """A rembg (FastAPI) boolean; blank is false."""
    key = (text or "").strip().lower()
    if not key or key in _FALSE:
        return False
    if key in _TRUE:
        return True
    raise InvalidOptionError(f"invalid {name} {text!r}: send true or false (or 1, 0)")


def _check_int(name: str, text: str | None, high: int | None) -> None:
    """A rembg integer, within 0..high as its server bounds it; blank is its default."""
    if text is None or not text.strip():
        return
    try:
        value = int(text.strip())
    except ValueError:
        value = -1
    if value < 0 or (high is not None and value > high):
        bounds = f"from 0 to {high}" if high is not None else "of 0 or more"
        raise InvalidOptionError(f"invalid {name} {text!r}: send a whole number {bounds}")


def parse_bgc(text: str | None) -> tuple[int, int, int, int] | None:
    """rembg's `bgc`: `R,G,B,A` (or `R,G,B`, opaque), each 0-255; blank is none."""
    if text is None or not text.strip():
        return None
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in (3, 4) or not all(0 <= v <= 255 for v in values):
        raise InvalidOptionError(
            f"invalid bgc {text!r}: send R,G,B,A with 3 or 4 whole numbers from 0 to 255, "
            "e.g. 255,255,255,255 for opaque white"
        )
    r, g, b, *alpha = values
    return r, g, b, alpha[0] if alpha else 255


def parse_model(text: str | None) -> str | None:
    """rembg's `model` -> our tier; blank: None (the configured model)."""
    if text is None or not text.strip():
        return None
    tier = MODELS.get(text.strip().lower())
    if tier is None:
        raise InvalidOptionError(
            f"model {text!r} is not served here: send {', '.join(MODELS)} "
            "(bria-rmbg is RMBG-2.0; u2net and u2netp are the U2-Net tier), or leave it out "
            "for the service's configured model"
        )
    return tier


def _refuse_unsupported(params: Mapping[str, str]) -> None:
    """rembg features this service does not run, refused with what to send instead."""
    if _bool("a", params.get("a")):
        raise InvalidOptionError(
            "a=true (alpha matting) is not served: rembg's closed-form matting takes seconds "
            "to minutes and gigabytes on a large photo, past this service's deadlines and "
            "memory budgets. Send dc=true (refined edges: the foreground colours alpha "
            "matting also estimates) or ppm=true (a hard mask), or leave a out"
        )
    if _bool("vm", params.get("vm")):
        raise InvalidOptionError(
            "vm=true (ViTMatte refinement) is not served: send dc=true (refined edges) "
            "instead, or leave vm out"
        )
    extras = (params.get("extras") or "").strip()
    if extras:
        try:
            given = json.loads(extras)
        except ValueError:
            given = extras
        if given != {}:
            raise InvalidOptionError(
                "extras (rembg's session arguments: model paths, remote API keys) are not "
                "accepted: the operator configures the models. Send no extras"
            )


def native_fields(params: Mapping[str, str]) -> dict[str, str]:
    """The native option fields (`imaging.options.OPTION_FIELDS`) rembg's parameters mean.

    rembg's defaults differ from ours: its edges are the photo's pixels (`edges=raw`)
    unless `dc`; with `om` it ignores `bgc` (the mask has no background), as here.
    """
    _refuse_unsupported(params)
    for name, high in (("af", 255), ("ab", 255), ("ae", None)):
        _check_int(name, params.get(name), high)  # checked as rembg does; used only with a
    only_mask = _bool("om", params.get("om"))
    fields = {"edges": "refined" if _bool("dc", params.get("dc")) else "raw"}
    if only_mask:
        fields["channels"] = "alpha"
    elif (color := parse_bgc(params.get("bgc"))) is not None:
        fields["bg_color"] = "".join(f"{c:02x}" for c in color)
    if _bool("ppm", params.get("ppm")):
        fields["post_process_mask"] = "true"
    return fields


def parse(params: Mapping[str, str]) -> RembgRequest:
    """rembg's parameters (text) -> the options and tier; `InvalidOptionError` (422) naming
    the parameter and what to send otherwise."""
    model = parse_model(params.get("model"))
    return RembgRequest(RenderOptions.parse(native_fields(params)), model)


async def read_post(
    request: Request,
    read_upload: Callable[[UploadFile], Awaitable[bytes]],
    *,
    max_part_size: int,
) -> tuple[bytes, RembgRequest]:
    """rembg's POST: the `file` upload and the parameters from the query and the form, under
    the native form's multipart limits; parameters are checked before the photo is read."""
    async with request.form(
        max_files=1, max_fields=len(POST_PARAMS), max_part_size=max_part_size
    ) as form:
        upload = form.get(FILE_FIELD)
        if not isinstance(upload, UploadFile):
            raise InvalidOptionError(
                f"missing the image: send it as the multipart file field '{FILE_FIELD}' "
                f"(curl -F {FILE_FIELD}=@photo.jpg), or GET {PATH}?url=..."
            )
        fields = [(k, v) for k, v in form.multi_items() if k != FILE_FIELD]
        if any(not isinstance(v, str) for _, v in fields):
            raise InvalidOptionError(f"send one file, as '{FILE_FIELD}'; other fields are text")
        text_fields = [(k, v) for k, v in fields if isinstance(v, str)]
        params = collect([request.query_params.multi_items(), text_fields], POST_PARAMS)
        parsed = parse(params)
        photo = await read_upload(upload)
    return photo, parsed


def read_get(request: Request) -> tuple[str, RembgRequest]:
    """rembg's GET: the image URL and the parameters, from the query string."""
    params = collect([request.query_params.multi_items()], GET_PARAMS)
    url = params.pop(URL_PARAM, "").strip()
    if not url:
        raise InvalidOptionError(
            f"missing the image: GET {PATH}?url=<image URL>, or POST the image as the "
            f"multipart file field '{FILE_FIELD}'"
        )
    return url, parse(params)


def openapi_request_body() -> dict[str, Any]:
    """POST's multipart form in the OpenAPI document: the file and the same parameters."""
    properties: dict[str, Any] = {
        FILE_FIELD: {"type": "string", "format": "binary", "description": "The image."}
    }
    properties |= {name: {"type": "string", "description": text} for name, text in PARAMS.items()}
    schema = {"type": "object", "required": [FILE_FIELD], "properties": properties}
    return {"required": True, "content": {"multipart/form-data": {"schema": schema}}}


def openapi_parameters(*, get: bool) -> list[dict[str, Any]]:
    """rembg's parameters in the OpenAPI document (the routes read them themselves)."""
    params = [
        {
            "name": name,
            "in": "query",
            "required": False,
            "schema": {"type": "string"},
            "description": text,
        }
        for name, text in PARAMS.items()
    ]
    if get:
        url = {"type": "string", "format": "uri"}
        params.insert(0, {"name": URL_PARAM, "in": "query", "required": True, "schema": url})
    return params
