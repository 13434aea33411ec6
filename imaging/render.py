"""What a request will cost, and the compose step.

Every entry point (HTTP, CLI, batch) learns the size of the result from the image header
alone (`plan_output`), so that a request whose result would be too big is refused before any
pixel is decoded or any model runs. The steps of `compose`, in order:
cut out (edge colours refined unless ``edges=raw``) -> scale down (``max_megapixels``) ->
crop to the subject (+ margin) -> place
(exact ``output_size``, or a ``ratio`` canvas) -> background (colour or image) -> channels.
Styled composites (`compose_styled`) frame the subject themselves.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from imaging.compose import (
    capped_size,
    compose_styled,
    crop_box,
    crop_padded,
    cutout,
    fit_into,
    fit_to_ratio,
    over_color,
    over_image,
    ratio_canvas_size,
    scale_down,
    styled_canvas_bound,
    subject_bbox,
)
from imaging.decode import DecodedImage
from imaging.errors import OutputTooLargeError
from imaging.options import Channels, Edges, OutputFormat, RenderOptions

#: Largest side each encoder writes correctly: libwebp's limit, the fast PNG writer's
#: 16-bit header fields (it wraps beyond), libjpeg's limit.
FORMAT_MAX_SIDE: dict[OutputFormat, int] = {
    OutputFormat.PNG: 65535,
    OutputFormat.WEBP: 16383,
    OutputFormat.JPEG: 65500,
}


def plan_output(width: int, height: int, options: RenderOptions) -> tuple[int, int]:
    """(W, H) of the result for a width x height (upright) photo; an upper bound where the
    subject decides (styles, crops)."""
    if options.output_size is not None:
        return options.output_size
    if options.style is not None:
        return styled_canvas_bound(width, height, options.ratio)
    if options.max_megapixels is not None:
        width, height = capped_size(width, height, megapixels(options.max_megapixels))
    if options.crop:
        # The subject is at most the whole photo; the margin may reach past it.
        m = options.crop_margin.pixels(max(width, height))
        width, height = width + 2 * m, height + 2 * m
    if options.ratio is not None:
        return ratio_canvas_size(width, height, options.ratio)
    return width, height


def check_output(size: tuple[int, int], options: RenderOptions, max_output_pixels: int) -> None:
    """Refuse a result over the pixel budget or over what its format can hold."""
    w, h = size
    if w * h > max_output_pixels:
        raise OutputTooLargeError(
            f"the result would be {w}x{h} = {w * h} pixels; the limit is {max_output_pixels} "
            "pixels (max_output_pixels): choose another ratio or size, or send a smaller image"
        )
    limit = FORMAT_MAX_SIDE[options.fmt]
    if max(w, h) > limit:
        raise OutputTooLargeError(
            f"the result would be {w}x{h}; {options.fmt.value} images are limited to "
            f"{limit} px a side: choose another format, ratio or size"
        )


def megapixels(value: float) -> int:
    """Pixels in ``value`` megapixels (`max_megapixels`)."""
    return round(value * 1_000_000)


#: (left, top, right, bottom) of the subject in a result, in its pixels
Box = tuple[int, int, int, int]


def refines_edges(options: RenderOptions) -> bool:
    """Whether the result's soft edges get estimated foreground colours (`imaging.foreground`,
    compiled once per process): refined edges, except for a mask alone (alpha channel)."""
    if options.edges is not Edges.REFINED:
        return False
    return options.style is not None or options.channels is not Channels.ALPHA


def compose(
    decoded: DecodedImage,
    mask: np.ndarray,
    options: RenderOptions,
    background: DecodedImage | None = None,
) -> np.ndarray:
    """The result's pixels: HxWx4 RGBA, HxWx3 RGB (opaque results) or HxW grey (alpha)."""
    return compose_located(decoded, mask, options, background)[0]


def compose_located(
    decoded: DecodedImage,
    mask: np.ndarray,
    options: RenderOptions,
    background: DecodedImage | None = None,
) -> tuple[np.ndarray, Box | None]:
    """`compose`, and where the subject ended up in the result (remove.bg's X-Foreground-*
    headers): its box after crop and placement, measured as crops measure it; None when the
    mask is empty, and for styled composites (they frame the subject themselves)."""
    if options.style is not None:
        pixels = compose_styled(
            decoded.rgb,
            mask,
            style=options.style,
            ratio=options.output_size or options.ratio,
            input_alpha=decoded.alpha,
            edges=options.edges,
        )
        if options.output_size is not None and pixels.shape[1::-1] != options.output_size:
            pixels = np.asarray(
                Image.fromarray(pixels).resize(options.output_size, Image.Resampling.LANCZOS)
            )
        return pixels, None
    # The mask alone needs no edge colours: skip their cost.
    edges = Edges.REFINED if refines_edges(options) else Edges.RAW
    pixels = cutout(decoded.rgb, mask, input_alpha=decoded.alpha, edges=edges)
    if options.max_megapixels is not None:
        pixels = scale_down(pixels, megapixels(options.max_megapixels))
    if options.crop:
        box = crop_box(pixels[:, :, 3], options.crop_margin)
        if box is not None:  # no subject: nothing to crop to, the whole frame stays
            pixels = crop_padded(pixels, box)
    if options.output_size is not None:
        pixels = fit_into(pixels, options.output_size)
    elif options.ratio is not None:
        pixels = fit_to_ratio(pixels, options.ratio)
    subject = subject_bbox(pixels[:, :, 3])
    if options.channels is Channels.ALPHA:
        return np.ascontiguousarray(pixels[:, :, 3]), subject
    if options.bg_color is not None:
        return over_color(pixels, options.bg_color), subject
    if background is not None:
        return over_image(pixels, background.rgb), subject
    return pixels, subject
