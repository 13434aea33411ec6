"""The styled canvases' backdrops: procedural, seeded layers (no assets), kept for reuse.

`backdrop` gives a fresh canvas of a style (`imaging.compose` lays the subject and its shadow
on it); the layers behind it depend only on the style and the canvas size, so they are built
once and kept in a `CanvasCache` bounded by bytes. Deterministic: noise comes from fixed
seeds, so the same size always gives the same pixels. The styles are described in
`imaging.compose`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from functools import lru_cache
from typing import TypeVar

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageOps

from imaging.options import Style


def backdrop(style: Style, cw: int, ch: int, horizon: int) -> Image.Image:
    """A fresh (mutable) RGB canvas of the style; cached layers are copied, never modified."""
    if style is Style.MINIMAL:
        return _CANVASES.get(("minimal", cw, ch), _minimal).copy()
    if style is Style.MOOD:
        return _CANVASES.get(("mood", cw, ch), _mood).copy()
    wall, floor = _CANVASES.get(("street", cw, ch), _street)
    canvas = wall.copy()
    horizon = min(max(horizon, 1), ch - 1)
    canvas.paste(floor.crop((0, horizon, cw, ch)), (0, horizon))
    kerb = max(2, round(ch * 0.006))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((0, horizon - kerb, cw, horizon - 1), fill=(58, 58, 60))
    draw.rectangle((0, horizon, cw, horizon + max(1, kerb // 2)), fill=(118, 117, 114))
    return canvas


_Layers = TypeVar("_Layers", Image.Image, tuple[Image.Image, Image.Image])


class CanvasCache:
    """Style layers by (style, width, height), least recently used dropped past `max_bytes`
    of pixels, all styles together; thread-safe (the service composes in worker threads).

    Bounded by bytes, not entries: a canvas follows its subject's size (long side up to
    `MAX_LONG_SIDE`: 2048x2048 RGB is 12 MiB, street's wall + floor 24 MiB), so the former
    per-style `lru_cache`s (8 minimal, 8 mood, 4 street entries) held up to 288 MiB of a
    long-lived process's memory. The soak's mix (benchmarks/cluster_soak.py) kept 61 MiB in
    them (benchmarks/ingress_memory.py); a hit saves building the layers, tens of ms.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[str, int, int], tuple[object, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: tuple[str, int, int], make: Callable[[int, int], _Layers]) -> _Layers:
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return found[0]  # type: ignore[return-value]
            self.misses += 1
        value = make(key[1], key[2])  # outside the lock: two threads may build the same one
        images = value if isinstance(value, tuple) else (value,)
        size = sum(im.width * im.height * len(im.getbands()) for im in images)
        with self._lock:
            if key not in self._entries and size <= self.max_bytes:
                self._entries[key] = (value, size)
                self._bytes += size
                while self._bytes > self.max_bytes:
                    _, (_, dropped) = self._entries.popitem(last=False)
                    self._bytes -= dropped
        return value

    @property
    def nbytes(self) -> int:
        """Bytes of pixels held now."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0


#: Bytes of style layers kept for reuse, all styles together: two 2048x2048 street pairs, or
#: five 2048x2048 plain canvases (see `CanvasCache`).
CANVAS_CACHE_BYTES = 64 * 2**20
_CANVASES = CanvasCache(CANVAS_CACHE_BYTES)


def _field(cw: int, ch: int, fn: np.ndarray) -> Image.Image:
    """Upscale a small smooth field (HxW or HxWx3, float 0..255) to the canvas (L or RGB)."""
    small = Image.fromarray(np.clip(fn + 0.5, 0, 255).astype(np.uint8))
    return small.resize((cw, ch), Image.Resampling.BICUBIC)


@lru_cache(maxsize=1)
def _grain(seed: int = 7) -> Image.Image:
    """256x256 RGB noise in 0..4, tiled as dither/grain so gradients do not band."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 5, size=(256, 256, 3), dtype=np.uint8))


def _add_grain(im: Image.Image) -> Image.Image:
    tile = _grain()
    noise = Image.new("RGB", im.size)
    for y in range(0, im.height, 256):
        for x in range(0, im.width, 256):
            noise.paste(tile, (x, y))
    return ImageChops.add(im, noise, scale=1.0, offset=-2)


_SMALL = 48  # resolution of the smooth fields before upscaling


def _grid(aspect: float) -> tuple[np.ndarray, np.ndarray]:
    gw = _SMALL if aspect >= 1 else max(4, round(_SMALL * aspect))
    gh = _SMALL if aspect <= 1 else max(4, round(_SMALL / aspect))
    y, x = np.mgrid[0:gh, 0:gw].astype(np.float32)
    return x / max(1, gw - 1), y / max(1, gh - 1)


def _minimal(cw: int, ch: int) -> Image.Image:
    x, y = _grid(cw / ch)
    top, bottom = np.array([247, 247, 245], np.float32), np.array([222, 222, 219], np.float32)
    t = (y**1.3)[:, :, None]
    col = top * (1 - t) + bottom * t
    pool = np.exp(-(((x - 0.5) / 0.45) ** 2 + ((y - 0.45) / 0.4) ** 2))[:, :, None]
    col = col + 6.0 * pool
    return _add_grain(_field(cw, ch, col))


def _mood(cw: int, ch: int) -> Image.Image:
    x, y = _grid(cw / ch)
    warm, cool = np.array([96, 66, 50], np.float32), np.array([26, 34, 52], np.float32)
    t = np.clip((x * 0.45 + y * 0.55), 0, 1)[:, :, None]
    col = warm * (1 - t) + cool * t
    r2 = ((x - 0.5) ** 2 + (y - 0.5) ** 2) / 0.5
    col = col * (1.0 - 0.35 * r2)[:, :, None] + 8.0 * np.exp(-r2 * 4)[:, :, None]
    return _add_grain(_field(cw, ch, col))


def _value_noise(cw: int, ch: int, seed: int) -> Image.Image:
    """Concrete-like L texture: seeded random grids at 4 scales, blended at half size, upscaled."""
    rng = np.random.default_rng(seed)
    hw, hh = max(2, cw // 2), max(2, ch // 2)
    acc: Image.Image | None = None
    for i, cells in enumerate((5, 20, 80, 320)):
        gw = max(2, round(cells * cw / max(cw, ch)))
        gh = max(2, round(cells * ch / max(cw, ch)))
        layer = Image.fromarray(rng.integers(0, 256, size=(gh, gw), dtype=np.uint8))
        layer = layer.resize((hw, hh), Image.Resampling.BICUBIC)
        acc = layer if acc is None else Image.blend(acc, layer, (0.45, 0.4, 0.35)[i - 1])
    assert acc is not None
    return ImageOps.autocontrast(acc, cutoff=1).resize((cw, ch), Image.Resampling.BILINEAR)


def _street(cw: int, ch: int) -> tuple[Image.Image, Image.Image]:
    """(wall, floor) full-canvas layers; the horizon between them is chosen per subject."""
    tex = _value_noise(cw, ch, seed=1234)
    wall = ImageOps.colorize(tex, black=(128, 130, 133), white=(170, 171, 172))
    tex_floor = _value_noise(cw, ch, seed=4321)
    floor = ImageOps.colorize(tex_floor, black=(70, 68, 66), white=(106, 103, 99))
    _, y = _grid(cw / ch)
    shade = np.clip(20 + 90 * y**1.5, 0, 255)  # floor darkens towards the viewer
    floor.paste((10, 10, 12), (0, 0), _field(cw, ch, shade))
    wall_shade = np.clip(50 * y[::-1] ** 2, 0, 255)  # wall slightly darker at the top
    wall.paste((20, 22, 26), (0, 0), _field(cw, ch, wall_shade))
    return _add_grain(wall), _add_grain(floor)
