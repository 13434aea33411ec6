"""RMBG-2.0's network input and mask output, the same for every runtime.

RGB uint8 images are resized (bilinear, antialiased, like the official torchvision
`Resize`) and normalized with ImageNet statistics; the logits' sigmoid is resized back to
each image's size and rounded to uint8. PyTorch (`models.rmbg`) and OpenVINO
(`models.rmbg_openvino`) both use these, so both see the same input and round masks alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def check_images(images: Sequence[np.ndarray]) -> None:
    """Reject anything but RGB uint8 HxWx3 arrays, naming the offending image."""
    for i, img in enumerate(images):
        if not isinstance(img, np.ndarray) or img.dtype != np.uint8:
            raise ValueError(f"image {i}: expected a uint8 numpy array")
        if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] == 0 or img.shape[1] == 0:
            raise ValueError(f"image {i}: expected an RGB array HxWx3, got shape {img.shape}")


def normalization(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(shift, scale) with `(x - shift) / scale == (x / 255 - mean) / std` for uint8 pixels."""
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    return mean * 255.0, std * 255.0


def resize_normalize(
    images: Sequence[torch.Tensor],
    resolution: int,
    shift: torch.Tensor,
    scale: torch.Tensor,
    batch: int | None = None,
) -> torch.Tensor:
    """(1, 3, H, W) uint8 images -> normalized (B', 3, R, R) float32, zero-padded to `batch`.

    Antialiased bilinear like the official torchvision `Resize`; shared by every
    runtime so that they all see the same network input.
    """
    rows = [
        F.interpolate(
            img.float(),
            size=(resolution, resolution),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
        for img in images
    ]
    x = (torch.cat(rows) - shift) / scale
    if batch is not None and batch > x.shape[0]:
        x = torch.cat((x, x.new_zeros(batch - x.shape[0], *x.shape[1:])))
    return x


def logits_to_masks(logits: torch.Tensor, sizes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
    """Sigmoid in float32, resize to each size, round to 0..255, one device-to-host copy."""
    prob = torch.sigmoid(logits.float())
    masks = [
        F.interpolate(
            prob[i : i + 1], size=size, mode="bilinear", align_corners=False, antialias=True
        )
        .mul_(255.0)
        .round_()
        .clamp_(0, 255)
        .to(torch.uint8)
        .reshape(-1)
        for i, size in enumerate(sizes)
    ]
    flat = torch.cat(masks).cpu().numpy()
    out, offset = [], 0
    for h, w in sizes:
        out.append(flat[offset : offset + h * w].reshape(h, w))
        offset += h * w
    return out
