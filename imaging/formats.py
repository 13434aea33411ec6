"""File suffixes and media types of the formats the pipeline reads and writes.

Apart from the codecs (`imaging.decode`, `imaging.encode`, which load numpy and Pillow's
decoders) so that a command line can name formats in its flags and find images in a folder
without loading them.
"""

from __future__ import annotations

from typing import NamedTuple

from imaging.options import OutputFormat


class FormatInfo(NamedTuple):
    """How a result in one output format is labelled: HTTP media type, file suffix."""

    media_type: str
    suffix: str


#: the one table of output formats; the CLI's suffixes and media types derive from it
FORMATS: dict[OutputFormat, FormatInfo] = {
    OutputFormat.PNG: FormatInfo("image/png", ".png"),
    OutputFormat.WEBP: FormatInfo("image/webp", ".webp"),
    OutputFormat.JPEG: FormatInfo("image/jpeg", ".jpg"),
}
MEDIA_TYPES: dict[OutputFormat, str] = {fmt: info.media_type for fmt, info in FORMATS.items()}

#: extensions of the formats `imaging.decode` reads (its `SUPPORTED_FORMATS`): what the CLI
#: and batch jobs take for images in a folder
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})
