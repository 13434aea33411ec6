"""The output options of a request, one typed model for every entry point.

The HTTP form, the CLI's flags and batch job configs all carry the same option names as
text (`OPTION_FIELDS`); `RenderOptions.parse` turns them into one validated, immutable value,
so every caller gets the same rules and the same `InvalidOptionError` messages, which name the
allowed values. Presets (`imaging.presets`) are named bundles of the same fields.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from imaging.errors import InvalidOptionError

MAX_RATIO_TERM = 100
"""Largest W or H accepted in a ratio: `4:5` and `16:9` are fine, `1920:1080` is not a ratio."""

MAX_ASPECT = 10.0
"""Most extreme aspect accepted (1:10 .. 10:1): beyond it the canvas is mostly empty margin."""

_RATIO_RE = re.compile(r"^\s*(\d{1,3})\s*:\s*(\d{1,3})\s*$")


class Style(str, Enum):
    """Background styles of `imaging.compose.compose_styled`."""

    MINIMAL = "minimal"
    MOOD = "mood"
    STREET = "street"


class OutputFormat(str, Enum):
    """Encodings offered by `imaging.encode.encode_image`."""

    PNG = "png"
    WEBP = "webp"
    JPEG = "jpeg"


class Edges(str, Enum):
    """Colour of soft mask edges in `imaging.compose`'s outputs.

    ``refined`` (the default, as remove.bg does): soft edge pixels get their estimated
    foreground colour (`imaging.foreground`), so no fringe of the old background remains.
    ``raw``: the photo's own colours, a plain cut-out (rembg's default).
    """

    REFINED = "refined"
    RAW = "raw"


def _allowed(enum: type[Enum]) -> str:
    return ", ".join(str(m.value) for m in enum)


def parse_ratio(text: str | None) -> tuple[int, int] | None:
    """Parse `W:H` (e.g. `4:5`, `1:1`, `16:9`) into `(W, H)`; `None` or blank means "no ratio".

    Terms are positive integers up to 100 and the aspect must lie within 1:10..10:1.
    The ratio is returned as given (not reduced), which keeps `16:9` readable in logs.
    """
    if text is None or not text.strip():
        return None
    m = _RATIO_RE.match(text)
    if m is None:
        raise InvalidOptionError(
            f"invalid ratio {text!r}: expected W:H with positive integers up to "
            f"{MAX_RATIO_TERM}, e.g. 1:1, 4:5, 16:9"
        )
    w, h = int(m.group(1)), int(m.group(2))
    if not (1 <= w <= MAX_RATIO_TERM and 1 <= h <= MAX_RATIO_TERM):
        raise InvalidOptionError(
            f"invalid ratio {text!r}: W and H must be integers from 1 to {MAX_RATIO_TERM}"
        )
    if max(w / h, h / w) > MAX_ASPECT:
        raise InvalidOptionError(
            f"invalid ratio {text!r}: aspect must lie between 1:{MAX_ASPECT:g} and {MAX_ASPECT:g}:1"
        )
    return w, h


def parse_style(text: str | None) -> Style | None:
    """Parse a style name (case-insensitive); `None` or blank means "plain cut-out"."""
    if text is None or not text.strip():
        return None
    try:
        return Style(text.strip().lower())
    except ValueError:
        raise InvalidOptionError(
            f"invalid style {text!r}: allowed values are {_allowed(Style)}"
        ) from None


def parse_edges(text: str | None, *, default: Edges = Edges.REFINED) -> Edges:
    """Parse an edge mode (case-insensitive); `None` or blank gives `default`."""
    if text is None or not text.strip():
        return default
    try:
        return Edges(text.strip().lower())
    except ValueError:
        raise InvalidOptionError(
            f"invalid edges {text!r}: allowed values are {_allowed(Edges)}"
        ) from None


_FORMAT_ALIASES = {"jpg": OutputFormat.JPEG}


def parse_format(text: str | None, *, default: OutputFormat = OutputFormat.PNG) -> OutputFormat:
    """Parse an output format (case-insensitive, `jpg` accepted for jpeg); blank gives `default`."""
    if text is None or not text.strip():
        return default
    key = text.strip().lower()
    if key in _FORMAT_ALIASES:
        return _FORMAT_ALIASES[key]
    try:
        return OutputFormat(key)
    except ValueError:
        raise InvalidOptionError(
            f"invalid format {text!r}: allowed values are {_allowed(OutputFormat)}"
        ) from None


class Channels(str, Enum):
    """What the result carries: the cut-out (``rgba``) or the mask alone (``alpha``, 8-bit grey)."""

    RGBA = "rgba"
    ALPHA = "alpha"


def parse_channels(text: str | None) -> Channels:
    """Parse a channels value (case-insensitive); blank gives ``rgba``."""
    if text is None or not text.strip():
        return Channels.RGBA
    try:
        return Channels(text.strip().lower())
    except ValueError:
        raise InvalidOptionError(
            f"invalid channels {text!r}: allowed values are {_allowed(Channels)}"
        ) from None


_HEX_COLOR_RE = re.compile(r"^#?([0-9a-fA-F]{6}|[0-9a-fA-F]{8})$")

RGBA = tuple[int, int, int, int]


def parse_color(text: str | None) -> RGBA | None:
    """Parse `RRGGBB`, `RRGGBBAA` (with or without `#`) or a CSS colour name into RGBA.

    Blank means "no colour". Alpha defaults to opaque (FF).
    """
    if text is None or not text.strip():
        return None
    key = text.strip()
    m = _HEX_COLOR_RE.match(key)
    if m is not None:
        digits = m.group(1) + ("ff" if len(m.group(1)) == 6 else "")
        r, g, b, a = (int(digits[i : i + 2], 16) for i in range(0, 8, 2))
        return r, g, b, a
    from PIL import ImageColor  # Pillow: loaded by a colour name, not by the option table

    if key.lower() in ImageColor.colormap:
        r, g, b = ImageColor.getrgb(key.lower())[:3]
        return r, g, b, 255
    raise InvalidOptionError(
        f"invalid bg_color {text!r}: expected RRGGBB or RRGGBBAA hex digits (with or without "
        "#), or a CSS colour name such as white, black or lightgray"
    )


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def parse_bool(name: str, text: str | None) -> bool:
    """Parse a yes/no option; blank is false."""
    if text is None or not text.strip():
        return False
    key = text.strip().lower()
    if key in _TRUE:
        return True
    if key in _FALSE:
        return False
    raise InvalidOptionError(f"invalid {name} {text!r}: allowed values are true, false")


MAX_MARGIN_PX = 500
"""Largest absolute crop margin: beyond it the "crop" is mostly empty canvas."""
MAX_MARGIN_PERCENT = 50.0
"""Largest relative crop margin, in percent of the subject's longer side."""

_MARGIN_RE = re.compile(r"^\s*(\d{1,4}(?:\.\d{1,3})?)\s*(px|%)?\s*$")


@dataclass(frozen=True)
class Margin:
    """A crop margin: absolute pixels, or a percentage of the subject's longer side."""

    value: float = 0.0
    percent: bool = False

    def pixels(self, subject_long_side: int) -> int:
        """The margin in pixels for a subject whose longer side is ``subject_long_side``."""
        if self.percent:
            return math.ceil(self.value / 100.0 * subject_long_side)
        return int(self.value)

    def __str__(self) -> str:
        return f"{self.value:g}%" if self.percent else f"{self.value:g}px"


def parse_margin(text: str | None) -> Margin:
    """Parse `40`, `40px` or `10%` (of the subject's longer side); blank is no margin."""
    if text is None or not text.strip():
        return Margin()
    m = _MARGIN_RE.match(text)
    if m is None:
        raise InvalidOptionError(
            f"invalid crop_margin {text!r}: expected pixels (40 or 40px) or a percentage of "
            "the subject (10%)"
        )
    value, percent = float(m.group(1)), m.group(2) == "%"
    if percent and value > MAX_MARGIN_PERCENT:
        raise InvalidOptionError(
            f"invalid crop_margin {text!r}: at most {MAX_MARGIN_PERCENT:g}% of the subject"
        )
    if not percent and (value > MAX_MARGIN_PX or value != int(value)):
        raise InvalidOptionError(
            f"invalid crop_margin {text!r}: whole pixels up to {MAX_MARGIN_PX}px"
        )
    return Margin(value, percent)


MAX_OUTPUT_SIDE = 20000
"""Largest side `output_size` accepts; the pixel budget and format limits apply on top."""

_SIZE_RE = re.compile(r"^\s*(\d{1,5})\s*[xX]\s*(\d{1,5})\s*$")


def parse_size(text: str | None) -> tuple[int, int] | None:
    """Parse `WxH` (e.g. `2000x2000`) into (W, H); blank means "no fixed size"."""
    if text is None or not text.strip():
        return None
    m = _SIZE_RE.match(text)
    if m is None:
        raise InvalidOptionError(
            f"invalid output_size {text!r}: expected WxH in pixels, e.g. 2000x2000"
        )
    w, h = int(m.group(1)), int(m.group(2))
    if not (1 <= w <= MAX_OUTPUT_SIDE and 1 <= h <= MAX_OUTPUT_SIDE):
        raise InvalidOptionError(
            f"invalid output_size {text!r}: each side from 1 to {MAX_OUTPUT_SIDE} px"
        )
    return w, h


MAX_MEGAPIXELS = 1000.0
"""Largest `max_megapixels` accepted: past it the cap never binds (the pixel limits do)."""

_MEGAPIXELS_RE = re.compile(r"^\s*(\d{1,4}(?:\.\d{1,6})?)\s*$")


def parse_megapixels(text: str | None) -> float | None:
    """Parse a megapixel cap (`0.25`, `4`, `25`); blank means "no cap"."""
    if text is None or not text.strip():
        return None
    m = _MEGAPIXELS_RE.match(text)
    value = float(m.group(1)) if m else 0.0
    if not 0.01 <= value <= MAX_MEGAPIXELS:
        raise InvalidOptionError(
            f"invalid max_megapixels {text!r}: expected a number of megapixels from 0.01 to "
            f"{MAX_MEGAPIXELS:g}, e.g. 0.25"
        )
    return value


@dataclass(frozen=True)
class OptionField:
    """One output option as every entry point names and describes it."""

    name: str
    help: str
    choices: tuple[str, ...] = ()
    example: str = ""


OPTION_FIELDS: tuple[OptionField, ...] = (
    OptionField(
        "preset",
        "A named bundle of the options below (e.g. marketplace-white); fields sent "
        "alongside override the preset's.",
        example="marketplace-white",
    ),
    OptionField(
        "style",
        "Compose the subject on a styled backdrop with a shadow (opaque result).",
        tuple(s.value for s in Style),
    ),
    OptionField("ratio", "Canvas ratio W:H, e.g. 1:1, 4:5, 16:9.", example="4:5"),
    OptionField(
        "output_size",
        "Exact result size WxH: the result is scaled to fit and centred on it.",
        example="2000x2000",
    ),
    OptionField(
        "max_megapixels",
        "Scale the photo down (never up) to at most this many megapixels before crop and "
        "placement, keeping its ratio (remove.bg's size: 0.25 for preview).",
        example="0.25",
    ),
    OptionField(
        "bg_color",
        "Background colour: RRGGBB, RRGGBBAA (with or without #) or a CSS colour name.",
        example="ffffff",
    ),
    OptionField("crop", "Crop to the subject's bounding box.", ("true", "false")),
    OptionField(
        "crop_margin",
        "Margin around the cropped subject: pixels (40px) or percent of the subject's "
        f"longer side (10%); at most {MAX_MARGIN_PX}px or {MAX_MARGIN_PERCENT:g}%.",
        example="10%",
    ),
    OptionField(
        "channels",
        "rgba: the cut-out; alpha: the mask alone, as an 8-bit grey image.",
        tuple(c.value for c in Channels),
    ),
    OptionField(
        "edges",
        "refined: soft edges get the subject's own colour, no fringe of the old background; "
        "raw: the photo's pixels.",
        tuple(e.value for e in Edges),
    ),
    OptionField(
        "post_process_mask",
        "rembg's mask post-processing (its ppm): an opening, a blur and a threshold, for a "
        "hard mask with smooth outlines and no specks.",
        ("true", "false"),
    ),
    OptionField(
        "format",
        "Encoding of the result; jpeg needs an opaque result (a style, a background or "
        "channels=alpha).",
        tuple(f.value for f in OutputFormat),
    ),
)
"""Every output option, in the order forms and help texts list them."""

OPTION_NAMES = frozenset(f.name for f in OPTION_FIELDS)


@dataclass(frozen=True)
class RenderOptions:
    """The validated output options of one request (see `OPTION_FIELDS`).

    ``bg_image`` says that a background image comes with the request (it travels as a
    second upload, not as text).
    """

    style: Style | None = None
    ratio: tuple[int, int] | None = None
    output_size: tuple[int, int] | None = None
    max_megapixels: float | None = None
    bg_color: RGBA | None = None
    bg_image: bool = False
    crop: bool = False
    crop_margin: Margin = Margin()
    channels: Channels = Channels.RGBA
    edges: Edges = Edges.REFINED
    fmt: OutputFormat = OutputFormat.PNG
    preset: str | None = None
    post_process_mask: bool = False

    @classmethod
    def parse(
        cls,
        fields: Mapping[str, str | None] | None = None,
        *,
        presets: Mapping[str, Mapping[str, str]] | None = None,
        bg_image: bool = False,
    ) -> RenderOptions:
        """Validate option fields given as text (form fields, CLI flags, job configs).

        A ``preset`` supplies defaults; fields given alongside it win.
        """
        given = {k: v for k, v in (fields or {}).items() if v is not None and str(v).strip()}
        unknown = sorted(set(given) - OPTION_NAMES)
        if unknown:
            raise InvalidOptionError(
                f"unknown option(s) {', '.join(unknown)}; allowed: "
                f"{', '.join(f.name for f in OPTION_FIELDS)}"
            )
        preset = given.get("preset")
        if preset is not None:
            preset = preset.strip().lower()
            known = presets or {}
            if preset not in known:
                raise InvalidOptionError(
                    f"invalid preset {given['preset']!r}: allowed values are "
                    f"{', '.join(sorted(known)) or '(none configured)'}"
                )
            given = {**known[preset], **given}
        options = cls(
            style=parse_style(given.get("style")),
            ratio=parse_ratio(given.get("ratio")),
            output_size=parse_size(given.get("output_size")),
            max_megapixels=parse_megapixels(given.get("max_megapixels")),
            bg_color=parse_color(given.get("bg_color")),
            bg_image=bg_image,
            crop=parse_bool("crop", given.get("crop")),
            crop_margin=parse_margin(given.get("crop_margin")),
            channels=parse_channels(given.get("channels")),
            edges=parse_edges(given.get("edges")),
            fmt=parse_format(given.get("format")),
            preset=preset,
            post_process_mask=parse_bool("post_process_mask", given.get("post_process_mask")),
        )
        options.validate()
        return options

    @property
    def opaque(self) -> bool:
        """Whether the result has no transparency (what JPEG needs)."""
        return (
            self.style is not None
            or self.bg_image
            or (self.bg_color is not None and self.bg_color[3] == 255)
            or self.channels is Channels.ALPHA
        )

    def validate(self) -> None:
        """Refuse combinations that contradict each other, naming both sides."""
        backdrop = "bg_image_file" if self.bg_image else "bg_color" if self.bg_color else None
        if self.style is not None and backdrop:
            raise InvalidOptionError(
                f"style and {backdrop} are exclusive: a style draws its own background"
            )
        if self.bg_image and self.bg_color is not None:
            raise InvalidOptionError("bg_color and bg_image_file are exclusive: send one")
        if self.channels is Channels.ALPHA and (self.style is not None or backdrop):
            raise InvalidOptionError(
                "channels=alpha returns the mask alone: it takes no style, bg_color or "
                "bg_image_file"
            )
        if self.ratio is not None and self.output_size is not None:
            raise InvalidOptionError(
                "ratio and output_size are exclusive: output_size fixes the ratio itself"
            )
        if self.max_megapixels is not None and (self.output_size or self.style):
            other = "output_size" if self.output_size else "style"
            raise InvalidOptionError(
                f"max_megapixels and {other} are exclusive: {other} sizes the result itself"
            )
        if self.crop_margin.value and not self.crop:
            raise InvalidOptionError("crop_margin applies to a crop: send crop=true with it")
        if self.crop and self.style is not None:
            raise InvalidOptionError(
                "crop and style are exclusive: a style frames the subject itself"
            )
        if self.fmt is OutputFormat.JPEG and not self.opaque:
            raise InvalidOptionError(
                "format 'jpeg' has no transparency: use it with a style "
                f"({', '.join(s.value for s in Style)}), an opaque bg_color, a bg_image_file "
                "or channels=alpha, or ask for 'png' or 'webp'"
            )
