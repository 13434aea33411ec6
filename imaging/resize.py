"""Resizing between a photo and a model's input, done where the photo is.

The ingress shrinks each photo to the model's input size before it travels to a model
replica (kilobytes through the object store instead of up to 150 MB), and enlarges the
small mask that comes back. The model replica publishes how (`ModelInputSpec`), so the
result is the same as if the replica had resized: same sizes, same filters.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image

_FILTERS = {f.name.lower(): f for f in Image.Resampling}


@dataclass(frozen=True)
class ModelInputSpec:
    """How a model group resizes: its input size and the filters each way."""

    width: int
    height: int
    downscale: str = "bilinear"
    reducing_gap: float | None = None
    upscale: str = "bilinear"

    def __post_init__(self) -> None:
        for name in (self.downscale, self.upscale):
            if name not in _FILTERS:
                raise ValueError(
                    f"unknown resampling filter {name!r}; use one of {sorted(_FILTERS)}"
                )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelInputSpec:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_input(self, rgb: np.ndarray) -> np.ndarray:
        """The photo (HxWx3 uint8) at the model's input size."""
        if rgb.shape[:2] == (self.height, self.width):
            return rgb
        small = Image.fromarray(rgb).resize(
            (self.width, self.height), _FILTERS[self.downscale], reducing_gap=self.reducing_gap
        )
        return np.asarray(small)

    def to_size(self, mask: np.ndarray, height: int, width: int) -> np.ndarray:
        """A model-size mask (HxW uint8) enlarged to the photo's size."""
        if mask.shape == (height, width):
            return mask
        return np.asarray(Image.fromarray(mask).resize((width, height), _FILTERS[self.upscale]))
