"""The one background-removal pipeline: bytes + options + a masker -> encoded result.

No Ray, no HTTP: the service's ingress, the `bgremove` CLI and batch jobs call this and
nothing else for decode -> mask -> compose -> encode, so the three give the same bytes for
the same input. A *masker* is anything that turns an RGB array into a mask and says which
model made it (the service routes to model groups with fallback; the CLI calls a predictor
in-process). The service's masker is async, the CLI's is not: `remove_background` and
`remove_background_async` run the same steps around either.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from imaging.decode import DecodedImage, decode_image
from imaging.encode import encode_image
from imaging.errors import InvalidOptionError
from imaging.limits import Limits
from imaging.options import RenderOptions
from imaging.render import Box, check_output, compose_located, plan_output

#: the service's limits, where a caller gives none
DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class MaskOutcome:
    """A mask (HxW uint8, the photo's size) and where it came from."""

    mask: np.ndarray
    model: str
    fallback_reason: str | None = None


class Masker(Protocol):
    """Turns an HxWx3 uint8 photo into its mask."""

    def __call__(self, rgb: np.ndarray) -> MaskOutcome: ...


class AsyncMasker(Protocol):
    """`Masker`, awaited (the service's model groups)."""

    def __call__(self, rgb: np.ndarray) -> Awaitable[MaskOutcome]: ...


#: Called before each image is decoded (its header read, the output budget passed) with the
#: pixels the request will hold for it (the image, plus the result for the photo): callers
#: reserve memory here, or refuse by raising.
Reserve = Callable[[int], None]


@dataclass(frozen=True)
class Result:
    """The encoded result and the facts a caller reports (headers, logs, manifests)."""

    body: bytes
    media_type: str
    model: str
    fallback_reason: str | None
    input_format: str
    input_size: tuple[int, int]
    output_size: tuple[int, int]
    timings_ms: dict[str, float] = field(default_factory=dict)
    #: the subject's box in the result (`imaging.render.compose_located`); None: no subject,
    #: or a styled composite
    foreground: Box | None = None


@dataclass
class Decoded:
    """A photo (and background image) decoded under the limits, its output size planned:
    everything `finish` needs besides the mask."""

    photo: DecodedImage
    background: DecodedImage | None
    planned: tuple[int, int]


def decode_for(
    data: bytes,
    options: RenderOptions,
    *,
    limits: Limits = DEFAULT_LIMITS,
    background: bytes | None = None,
    reserve: Reserve | None = None,
) -> Decoded:
    """Decode the photo (and background image) after checking what the result will cost.

    The first step of `remove_background`, public for callers that run the steps apart
    (batch jobs decode in one process, mask in another, finish in a third).
    """
    if options.bg_image != (background is not None):
        raise InvalidOptionError(
            "bg_image_file is missing" if options.bg_image else "unexpected background image"
        )
    planned: list[tuple[int, int]] = []

    def admit_photo(width: int, height: int) -> None:
        out = plan_output(width, height, options)
        check_output(out, options, limits.max_output_pixels)
        planned.append(out)
        if reserve is not None:
            reserve(width * height + out[0] * out[1])

    def admit_background(width: int, height: int) -> None:
        if reserve is not None:
            reserve(width * height)

    photo = decode_image(
        data, max_bytes=limits.max_bytes, max_pixels=limits.max_pixels, before_decode=admit_photo
    )
    backdrop = None
    if background is not None:
        backdrop = decode_image(
            background,
            max_bytes=limits.max_bytes,
            max_pixels=limits.max_pixels,
            before_decode=admit_background,
        )
    return Decoded(photo, backdrop, planned[0])


def finish(
    decoded: Decoded,
    outcome: MaskOutcome,
    options: RenderOptions,
    timings: dict[str, float] | None = None,
) -> Result:
    """Post-process the mask (where asked), compose and encode: the last step of
    `remove_background`, given the mask at the photo's size. ``timings`` (ms by step, filled
    in) become the result's."""
    timings = {} if timings is None else timings
    t0 = time.perf_counter()
    # a mask step, before compose: every entry point gets it (rembg's ppm, our CLI and form)
    mask = outcome.mask
    if options.post_process_mask:
        from imaging.mask_post import post_process_mask  # scipy: loaded when asked for

        mask = post_process_mask(mask)
    pixels, foreground = compose_located(decoded.photo, mask, options, decoded.background)
    t1 = time.perf_counter()
    body, media_type = encode_image(pixels, options.fmt)
    t2 = time.perf_counter()
    timings.update(compose=(t1 - t0) * 1000, encode=(t2 - t1) * 1000)
    return Result(
        body=body,
        media_type=media_type,
        model=outcome.model,
        fallback_reason=outcome.fallback_reason,
        input_format=decoded.photo.format,
        input_size=(decoded.photo.width, decoded.photo.height),
        output_size=(pixels.shape[1], pixels.shape[0]),
        timings_ms=timings,
        foreground=foreground,
    )


def remove_background(
    data: bytes,
    options: RenderOptions,
    masker: Masker,
    *,
    limits: Limits = DEFAULT_LIMITS,
    background: bytes | None = None,
    reserve: Reserve | None = None,
) -> Result:
    """Remove the background of the image in ``data`` as ``options`` ask (blocking)."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    decoded = decode_for(data, options, limits=limits, background=background, reserve=reserve)
    t1 = time.perf_counter()
    outcome = masker(decoded.photo.rgb)
    t2 = time.perf_counter()
    timings.update(decode=(t1 - t0) * 1000, mask=(t2 - t1) * 1000)
    return finish(decoded, outcome, options, timings)


async def remove_background_async(
    data: bytes,
    options: RenderOptions,
    masker: AsyncMasker,
    *,
    limits: Limits = DEFAULT_LIMITS,
    background: bytes | None = None,
    reserve: Reserve | None = None,
) -> Result:
    """`remove_background` with an awaited masker; CPU-bound steps run in worker threads
    (Pillow, numpy and the numba edge kernel release the GIL), keeping an event loop free."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    decoded = await asyncio.to_thread(
        decode_for, data, options, limits=limits, background=background, reserve=reserve
    )
    t1 = time.perf_counter()
    outcome = await masker(decoded.photo.rgb)
    t2 = time.perf_counter()
    timings.update(decode=(t1 - t0) * 1000, mask=(t2 - t1) * 1000)
    return await asyncio.to_thread(finish, decoded, outcome, options, timings)
