"""What one image may cost: its bytes, its decoded pixels, the pixels of its result.

Apart from `imaging.pipeline` (which loads the codecs and the edge estimator) so that the
settings of every entry point can carry the limits without loading the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """What one request may cost; the defaults are the service's."""

    max_bytes: int = 25 * 1024 * 1024
    max_pixels: int = 50_000_000
    max_output_pixels: int = 50_000_000
