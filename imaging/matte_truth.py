"""Synthetic ground truth for foreground colour estimation, for the tests and the benchmark.

Photos whose true foreground colour is known at every soft pixel (real photos have no such
ground truth): a soft matte (`synthetic_matte`) mixes a known foreground with a known
background (`composite`), and `edge_error` says how far an estimate is from the truth.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def synthetic_matte(height: int, width: int, *, seed: int = 0) -> np.ndarray:
    """A soft HxW uint8 matte: a disc with a wide blurred rim plus hair-like strands (1-2 px
    wide, partly transparent, anti-aliased by drawing 4x larger). Deterministic per seed."""
    rng = np.random.default_rng(seed)
    side = min(height, width)
    cx, cy, r = width / 2, height / 2, 0.28 * side
    disc = Image.new("L", (width, height), 0)
    ImageDraw.Draw(disc).ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    disc = disc.filter(ImageFilter.GaussianBlur(0.025 * side))
    ss = 4
    hair = Image.new("L", (width * ss, height * ss), 0)
    draw = ImageDraw.Draw(hair)
    for _ in range(90):
        t = rng.uniform(0, 2 * np.pi)
        x, y = cx + 0.8 * r * np.cos(t), cy + 0.8 * r * np.sin(t)
        heading = t + rng.uniform(-0.6, 0.6)
        points = []
        for _ in range(30):
            points.append((x * ss, y * ss))
            heading += rng.normal(0, 0.08)
            step = rng.uniform(2, 4) * 0.1 * side / 30
            x, y = x + step * np.cos(heading), y + step * np.sin(heading)
        draw.line(points, fill=int(rng.uniform(120, 255)), width=int(rng.integers(2, 7)))
    hair = hair.resize((width, height), Image.Resampling.BOX)
    return np.maximum(np.asarray(disc), np.asarray(hair))


def composite(foreground: np.ndarray, background: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``round(aF + (1 - a)B)`` as HxWx3 uint8; ``background`` may be one colour (3,)."""
    a = alpha[:, :, None].astype(np.float64) / 255.0
    mixed = a * foreground + (1.0 - a) * np.asarray(background, np.float64)
    return np.clip(np.round(mixed), 0, 255).astype(np.uint8)


def edge_error(estimate: np.ndarray, foreground: np.ndarray, alpha: np.ndarray) -> float:
    """Mean |estimate - foreground| (0..255, all channels) over pixels with 0 < alpha < 255."""
    soft = (alpha > 0) & (alpha < 255)
    diff = np.abs(estimate.astype(np.int16) - foreground.astype(np.int16))
    return float(diff[soft].mean())
