"""Request options shared by the service and the compositor: style, output format, aspect ratio.

Parsing lives here (not in the HTTP layer) so every caller gets the same rules and the same
`InvalidOptionError` messages, which name the allowed values.
"""

from __future__ import annotations

import re
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
