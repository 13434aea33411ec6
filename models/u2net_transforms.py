"""U2-Net's network input and mask output, as rembg computes them.

rembg resizes a photo to the model input (LANCZOS), divides by its maximum and standardises
with ImageNet statistics; the model's map is min-max scaled, truncated to uint8 and resized
back. The predictor (`models.u2net`) and the INT8 quantizer's calibration and checks
(`models.u2net_int8`) both use these, so INT8 is checked on exactly what the service runs.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from PIL import Image

ResizeMode = Literal["exact", "fast"]

#: ImageNet statistics, as rembg's U2-Net sessions pass them to ``normalize``
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
#: Pillow pre-reduces by an integer box filter while the remaining LANCZOS
#: step still downsamples by >= this factor; 3.0 stays well inside tolerance
FAST_REDUCING_GAP = 3.0


def resize_filters(mode: ResizeMode) -> tuple[float | None, Image.Resampling]:
    """(reducing_gap for the downscale to the model input, filter for the mask upscale).

    Public so a caller that resizes outside ``predict`` (the ingress, before
    sending the model its input size) resizes exactly as ``info.resize`` says.
    """
    if mode == "exact":
        return None, Image.Resampling.LANCZOS
    if mode == "fast":
        return FAST_REDUCING_GAP, Image.Resampling.BICUBIC
    raise ValueError(f"resize must be 'exact' or 'fast', not {mode!r}")


def _to_pil_rgb(image: np.ndarray) -> Image.Image:
    """Like rembg's ``Image.fromarray(a).convert("RGB")`` for uint8 HxW, HxWx3 or HxWx4."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 numpy array, got {getattr(image, 'dtype', image)!r}")
    if (image.ndim == 3 and image.shape[2] == 3) or image.ndim == 2:
        pil = Image.fromarray(np.ascontiguousarray(image))
    elif image.ndim == 3 and image.shape[2] == 4:
        pil = Image.fromarray(np.ascontiguousarray(image), "RGBA")
    else:
        raise ValueError(f"expected an HxWx3 RGB array, got shape {image.shape}")
    if min(pil.size) < 1:
        raise ValueError(f"empty image of shape {image.shape}")
    return pil.convert("RGB") if pil.mode != "RGB" else pil


def preprocess(
    image: np.ndarray, size: tuple[int, int], reducing_gap: float | None = None
) -> np.ndarray:
    """RGB uint8 array -> (3, H, W) float32 input, bit-identical to rembg's ``normalize``.

    rembg divides by the image max and standardises in float64 before the
    float32 cast; the values are a function of (uint8 value, max, channel)
    only, so a 256-entry table per channel gives the same float32 numbers.
    """
    pil = _to_pil_rgb(image)
    if pil.size != size:  # one already at the input size (the ingress resized it) is used as is
        pil = pil.resize(size, Image.Resampling.LANCZOS, reducing_gap=reducing_gap)
    u8 = np.asarray(pil)
    scaled = np.arange(256, dtype=np.float64) / max(float(u8.max()), 1e-6)
    out = np.empty((3, size[1], size[0]), dtype=np.float32)
    for c in range(3):
        lut = ((scaled - MEAN[c]) / STD[c]).astype(np.float32)
        np.take(lut, u8[:, :, c], out=out[c])
    return out


def postprocess(pred: np.ndarray, size: tuple[int, int], upscale: Image.Resampling) -> np.ndarray:
    """(H', W') model output -> HxW uint8 mask at ``size`` (W, H), as rembg does.

    A mask asked for at the model's own size comes back unresized. A constant
    prediction (rembg divides by zero there) gives an empty mask.
    """
    pred = np.asarray(pred, dtype=np.float32)
    lo, hi = pred.min(), pred.max()
    if not hi > lo:
        return np.zeros((size[1], size[0]), dtype=np.uint8)
    norm = (pred - lo) / (hi - lo)
    small = Image.fromarray((norm.clip(0, 1) * 255).astype(np.uint8), mode="L")
    if small.size == size:
        return np.asarray(small)
    return np.asarray(small.resize(size, upscale))
