"""Memory that rendering one request holds, for what Ray reserves per worker.

The service's ingress and a batch job's finish tasks do the same work per photo (decode,
compose and encode: `imaging.pipeline`), so both reserve by this one rule. It sits here, below
both, because a batch job's driver must not import the serving package (Ray Serve).
"""

from __future__ import annotations

#: memory of an idle rendering worker (Python, its libraries, Ray's worker), bytes
RENDER_BASE_MEMORY = 512 * 1024**2
#: memory per pixel rendered at a time (input + output pixels): the decoded RGB (3 bytes),
#: mask and input alpha (2), the refined-edge copy (3) and the estimator's working arrays (up
#: to 27 over the soft-edge crop) of the input, the composed RGBA (4) and the encoder's
#: buffers of the output; per pixel, with headroom
RENDER_BYTES_PER_PIXEL = 20


#: a batch job's decode task's own memory besides the photo it decodes (interpreter, libraries,
#: the batch); the photo adds 3 bytes per pixel
DECODE_BASE_MEMORY = 256 * 1024**2


def render_memory(pixels: int) -> int:
    """Bytes to reserve for a worker that renders up to `pixels` (input + output) at a time."""
    return RENDER_BASE_MEMORY + RENDER_BYTES_PER_PIXEL * pixels
