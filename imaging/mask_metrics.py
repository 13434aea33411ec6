"""Figures of a mask, and of a mask against another or against ground truth.

What the migration guide's comparison tools print: how much of a photo a model keeps, how
much of its mask is soft edge, how far two models agree, and, given ground-truth masks, the
figures the BiRefNet and DIS papers report (MAE, IoU, maximum F-measure with beta^2 = 0.3).
Masks are HxW uint8 (0 background, 255 foreground), as every model here returns them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: mask values strictly between these are soft edge (hair, fur, motion blur, an unsure model)
SOFT_RANGE = (15, 240)
#: the weight of precision in the F-measure of salient-object and DIS benchmarks
F_BETA_SQUARED = 0.3


def _checked(*masks: np.ndarray) -> None:
    shapes = {m.shape for m in masks}
    if len(shapes) != 1 or any(m.ndim != 2 or m.dtype != np.uint8 for m in masks):
        raise ValueError(f"masks must be HxW uint8 of one size, got {sorted(shapes)}")


def foreground_share(mask: np.ndarray) -> float:
    """Share of pixels kept (alpha at least half)."""
    _checked(mask)
    return float((mask >= 128).mean())


def soft_share(mask: np.ndarray) -> float:
    """Share of pixels neither background nor foreground (`SOFT_RANGE`)."""
    _checked(mask)
    return float(((mask > SOFT_RANGE[0]) & (mask < SOFT_RANGE[1])).mean())


def mae(mask: np.ndarray, truth: np.ndarray) -> float:
    """Mean absolute error on a 0-1 scale."""
    _checked(mask, truth)
    return float(np.abs(mask.astype(np.float32) - truth.astype(np.float32)).mean() / 255.0)


def iou(mask: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union of the two masks cut at half; 1.0 when both are empty."""
    _checked(mask, truth)
    a, b = mask >= 128, truth >= 128
    union = int((a | b).sum())
    return 1.0 if union == 0 else float((a & b).sum() / union)


def max_f_measure(mask: np.ndarray, truth: np.ndarray) -> float:
    """The best F-measure (beta^2 = 0.3) over the 256 thresholds of ``mask`` against
    ``truth`` cut at half, as the DIS and BiRefNet papers report it (maxF)."""
    _checked(mask, truth)
    positive = truth >= 128
    # pixels at or above each threshold t: counts from the top of the histograms
    hits = np.bincount(mask[positive], minlength=256)[::-1].cumsum()[::-1]
    kept = np.bincount(mask.ravel(), minlength=256)[::-1].cumsum()[::-1]
    relevant = int(positive.sum())
    precision = np.divide(hits, kept, out=np.zeros(256), where=kept > 0)
    recall = hits / relevant if relevant else np.zeros(256)
    denominator = F_BETA_SQUARED * precision + recall
    f = np.divide(
        (1 + F_BETA_SQUARED) * precision * recall,
        denominator,
        out=np.zeros(256),
        where=denominator > 0,
    )
    return float(f.max())


@dataclass(frozen=True)
class Agreement:
    """How far two models' masks of one photo agree."""

    mean_abs_diff: float
    iou: float

    @classmethod
    def of(cls, a: np.ndarray, b: np.ndarray) -> Agreement:
        return cls(mean_abs_diff=mae(a, b) * 255.0, iou=iou(a, b))

    def __str__(self) -> str:
        return f"mean |diff| {self.mean_abs_diff:.1f}/255, IoU {self.iou:.3f}"
