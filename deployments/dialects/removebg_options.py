"""remove.bg's option fields as one `RenderOptions`: the dialect's translation, pure.

`translate` takes the fields a remove.bg client sent (set ones only) and gives the options
the pipeline runs with, and whether the answer is a ZIP. What this service cannot honour
(specialised models, shadows, moving the subject, a region of interest, margins per side or
in %) is refused with a 400 that says what to send instead, never answered with a silently
different image; docs/coming-from-removebg.md has the table.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

from imaging.errors import InvalidOptionError
from imaging.options import OutputFormat, RenderOptions, parse_bool

#: remove.bg's sizes as megapixel caps (its API reference: preview 0.25 MP, medium 1.5,
#: hd 4, full 25 and 50 in a ZIP, 50MP 50; auto is "the highest available": full).
SIZE_MEGAPIXELS: dict[str, float] = {
    "preview": 0.25,
    "small": 0.25,
    "regular": 0.25,
    "medium": 1.5,
    "hd": 4.0,
    "full": 25.0,
    "4k": 25.0,
    "auto": 25.0,
    "50mp": 50.0,
}
FULL_SIZES = frozenset({"full", "4k", "auto"})
ZIP_FULL_MEGAPIXELS = 50.0
DEFAULT_SIZE = "preview"
FORMATS = ("auto", "png", "jpg", "webp", "zip")
TYPE_LEVELS = ("none", "1", "2", "latest")
SHADOW_TYPES = ("car", "3d", "drop")
WHITE = "ffffff"

_SHORT_HEX = re.compile(r"^#?([0-9a-fA-F]{3,4})$")
_MARGIN_TOKEN = re.compile(r"^(\d{1,4})(px)?$")
_WHOLE_ROI = ("0% 0% 100% 100%",)


def _color(text: str) -> str:
    """remove.bg's 3/4-digit hex (`fff`, `81d4fa` is 6) as the 6/8 digits ours takes."""
    m = _SHORT_HEX.match(text)
    return "".join(c * 2 for c in m.group(1)) if m else text


def _margin(text: str) -> str:
    """remove.bg's crop_margin (1, 2 or 4 values) as our one margin in pixels."""
    tokens = text.replace(",", " ").lower().split()
    if any("%" in t for t in tokens):
        raise InvalidOptionError(
            f"crop_margin {text!r}: margins in % are not supported here (remove.bg takes them "
            "of each side of the subject, ours of its longer side): send pixels, e.g. 30px"
        )
    matches = [_MARGIN_TOKEN.match(t) for t in tokens]
    if len(tokens) not in (1, 2, 4) or not all(matches):
        raise InvalidOptionError(
            f"invalid crop_margin {text!r}: expected pixels, e.g. 30px (one value for all sides)"
        )
    values = {int(m.group(1)) for m in matches if m}
    if len(values) > 1:
        raise InvalidOptionError(
            f"crop_margin {text!r}: a different margin per side is not supported here: send one "
            "value for all sides, e.g. 30px"
        )
    return f"{values.pop()}px"


def _refuse(name: str, value: str, what: str, send: str) -> InvalidOptionError:
    return InvalidOptionError(f"{name}={value!r}: {what} is not supported here: {send}")


def _check_unsupported(given: Mapping[str, str]) -> None:
    """Refuse what this service cannot do as remove.bg would; validate what it ignores."""
    lowered = {k: v.lower() for k, v in given.items()}
    for name in ("scale", "position"):
        if lowered.get(name, "original") != "original":
            raise _refuse(
                name,
                given[name],
                "moving or resizing the subject on the canvas",
                f"leave {name} empty or send 'original' (crop=true with crop_margin frames the "
                "subject instead)",
            )
    roi = " ".join(lowered.get("roi", _WHOLE_ROI[0]).split())
    if roi not in _WHOLE_ROI:
        raise _refuse(
            "roi", given["roi"], "a region of interest", "leave roi empty or send '0% 0% 100% 100%'"
        )
    if lowered.get("type", "auto") != "auto":
        raise _refuse(
            "type",
            given["type"],
            "choosing one of remove.bg's specialised models",
            "send type=auto or leave it empty (one general model here cuts out the main "
            "subject, whatever it is)",
        )
    if lowered.get("type_level", "none") not in TYPE_LEVELS:
        raise InvalidOptionError(
            f"invalid type_level {given['type_level']!r}: allowed values are "
            f"{', '.join(TYPE_LEVELS)}"
        )
    shadow = lowered.get("shadow_type", "none")
    if shadow in SHADOW_TYPES:
        raise _refuse(
            "shadow_type",
            given["shadow_type"],
            "drawing a shadow",
            "leave shadow_type empty or send none",
        )
    if shadow != "none":
        raise InvalidOptionError(
            f"invalid shadow_type {given['shadow_type']!r}: allowed values are none, car, 3D, "
            "drop (only none is supported here)"
        )
    opacity = given.get("shadow_opacity", "0")
    if not (opacity.isdigit() and 0 <= int(opacity) <= 100):
        raise InvalidOptionError(
            f"invalid shadow_opacity {opacity!r}: a whole number from 0 to 100"
        )
    # remove.bg applies these to car photos only, which this service does not single out
    parse_bool("add_shadow", given.get("add_shadow"))
    parse_bool("semitransparency", given.get("semitransparency"))


def translate(given: Mapping[str, str], *, bg_image: bool) -> tuple[RenderOptions, bool]:
    """remove.bg's option fields (set ones only) -> our options, and whether the answer is a
    ZIP (color.jpg + alpha.png; the pipeline then makes a PNG)."""
    _check_unsupported(given)
    fmt = given.get("format", "auto").lower()
    if fmt not in FORMATS:
        raise InvalidOptionError(
            f"invalid format {given['format']!r}: allowed values are {', '.join(FORMATS)}"
        )
    size = given.get("size", DEFAULT_SIZE).lower()
    if size not in SIZE_MEGAPIXELS:
        raise InvalidOptionError(
            f"invalid size {given['size']!r}: allowed values are preview, full, 50MP, auto "
            "(and the older small, regular, medium, hd, 4k)"
        )
    zipped = fmt == "zip"
    megapixels = ZIP_FULL_MEGAPIXELS if zipped and size in FULL_SIZES else SIZE_MEGAPIXELS[size]
    crop = parse_bool("crop", given.get("crop"))
    # remove.bg's crop_margin "only has an effect when crop is true": checked, then dropped
    margin = _margin(given["crop_margin"]) if "crop_margin" in given else None
    fields = {
        "max_megapixels": f"{megapixels:g}",
        "crop": "true" if crop else None,
        "crop_margin": margin if crop else None,
        "channels": given.get("channels"),
        "bg_color": _color(given["bg_color"]) if "bg_color" in given else None,
    }
    options = RenderOptions.parse(fields, bg_image=bg_image)
    if fmt == "jpg" and not options.opaque:
        if options.bg_color is not None:
            raise InvalidOptionError(
                f"format=jpg has no transparency, and bg_color {given['bg_color']!r} is "
                "semi-transparent: send an opaque bg_color, or format=png or zip"
            )
        # remove.bg's JPG has no transparency: the subject on white
        options = RenderOptions.parse({**fields, "bg_color": WHITE}, bg_image=bg_image)
    out = {
        "png": OutputFormat.PNG,
        "zip": OutputFormat.PNG,
        "webp": OutputFormat.WEBP,
        "jpg": OutputFormat.JPEG,
        "auto": OutputFormat.JPEG if options.opaque else OutputFormat.PNG,
    }[fmt]
    options = dataclasses.replace(options, fmt=out)
    options.validate()
    return options, zipped
