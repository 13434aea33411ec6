"""What a request asks for, what it will cost, and the compose + encode step.

Every entry point (HTTP, CLI, batch) validates options here, learns the size of the result
from the image header alone (`plan_output`), so that a request whose result would be too big is
refused before any pixel is decoded or any model runs, and renders with `render`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imaging.compose import (
    compose_styled,
    cutout,
    fit_to_ratio,
    ratio_canvas_size,
    styled_canvas_bound,
)
from imaging.decode import DecodedImage
from imaging.encode import encode_image
from imaging.errors import InvalidOptionError, OutputTooLargeError
from imaging.options import (
    Edges,
    OutputFormat,
    Style,
    parse_edges,
    parse_format,
    parse_ratio,
    parse_style,
)

#: Largest side each encoder writes correctly: libwebp's limit, the fast PNG writer's
#: 16-bit header fields (it wraps beyond), libjpeg's limit.
FORMAT_MAX_SIDE: dict[OutputFormat, int] = {
    OutputFormat.PNG: 65535,
    OutputFormat.WEBP: 16383,
    OutputFormat.JPEG: 65500,
}


@dataclass(frozen=True)
class RenderOptions:
    """The validated output options of one request."""

    ratio: tuple[int, int] | None = None
    style: Style | None = None
    fmt: OutputFormat = OutputFormat.PNG
    edges: Edges = Edges.REFINED

    @classmethod
    def parse(
        cls,
        ratio: str | None = None,
        style: str | None = None,
        fmt: str | None = None,
        edges: str | None = None,
    ) -> RenderOptions:
        options = cls(parse_ratio(ratio), parse_style(style), parse_format(fmt), parse_edges(edges))
        if options.fmt is OutputFormat.JPEG and options.style is None:
            raise InvalidOptionError(
                "format 'jpeg' has no transparency: use it with a style "
                f"({', '.join(s.value for s in Style)}), or ask for 'png' or 'webp'"
            )
        return options


def plan_output(width: int, height: int, options: RenderOptions) -> tuple[int, int]:
    """(W, H) of the result for a width x height (upright) photo; an upper bound for styles."""
    if options.style is not None:
        return styled_canvas_bound(width, height, options.ratio)
    if options.ratio is not None:
        return ratio_canvas_size(width, height, options.ratio)
    return width, height


def check_output(size: tuple[int, int], options: RenderOptions, max_output_pixels: int) -> None:
    """Refuse a result over the pixel budget or over what its format can hold."""
    w, h = size
    if w * h > max_output_pixels:
        raise OutputTooLargeError(
            f"the result would be {w}x{h} = {w * h} pixels; the limit is {max_output_pixels} "
            "pixels (max_output_pixels): choose another ratio or send a smaller image"
        )
    limit = FORMAT_MAX_SIDE[options.fmt]
    if max(w, h) > limit:
        raise OutputTooLargeError(
            f"the result would be {w}x{h}; {options.fmt.value} images are limited to "
            f"{limit} px a side: choose another format or ratio"
        )


def render(decoded: DecodedImage, mask: np.ndarray, options: RenderOptions) -> tuple[bytes, str]:
    """Compose the mask with the image as asked, then encode: (bytes, media type)."""
    if options.style is None:
        pixels = cutout(decoded.rgb, mask, input_alpha=decoded.alpha, edges=options.edges)
        if options.ratio is not None:
            pixels = fit_to_ratio(pixels, options.ratio)
    else:
        pixels = compose_styled(
            decoded.rgb,
            mask,
            style=options.style,
            ratio=options.ratio,
            input_alpha=decoded.alpha,
            edges=options.edges,
        )
    return encode_image(pixels, options.fmt)
