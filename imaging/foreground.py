"""Foreground colour estimation for soft mask edges (edge decontamination).

Why: a soft edge pixel is a mix of subject and old background, ``I = aF + (1 - a)B``; a plain
cut-out keeps ``I`` as the colour, so the old background shows as a fringe once the subject
sits on a new one (a dark horse tail on a green meadow keeps a green halo). `estimate_foreground`
estimates ``F`` for every pixel with ``0 < a < 1``; fully opaque pixels keep their colour bit
for bit and fully transparent ones are returned as given.

How: the blur-fusion idea of Forte & Pitie, "Approximate Fast Foreground Colour Estimation"
(ICIP 2021), run as a coarse-to-fine cascade. Each pass takes local weighted means of the
current foreground and background estimates, ``F^ = box(wF F) / box(wF)`` and
``B^ = box(wB B) / box(wB)``, then moves both along the compositing equation until the pixel
is explained again: with the residual ``r = I - a F^ - (1 - a) B^`` and
``d = a^2 + (1 - a)^2``, ``F = F^ + r a / d`` and ``B = B^ + r (1 - a) / d`` (the smallest
change of ``(F, B)`` that satisfies ``I = aF + (1 - a)B``; the paper moves ``F`` alone, by
``r a``). Opaque pixels thus keep ``F = I`` and clear ones ``B = I``. On synthetic ground
truth (``benchmarks/bench_foreground.py``) the paper's two passes (90 and 6 px windows) err
about twice as much as pymatting's ``estimate_foreground_ml``; three changes bring the error
to about 0.6 of ML's: sample weights ``wF = a^3`` and ``wB = (1 - a)^3`` (samples that show a
colour clearly count most; the paper uses ``a`` and ``1 - a``), correcting ``B`` as well as
``F``, and windows halving from one that spans the whole crop down to 10 px, then 3 px. The
widest windows matter on wide soft zones (a long ramp keeps the colour of the opaque side).

Cost: O(1) per pixel, on the bounding box of the soft pixels plus a margin. The coarse passes
run on grids of 2^k px bins (5x5-bin windows). Within a bin the smooth ``F^`` and ``B^`` of
the previous pass are taken as constant, so each bin's weighted sum of the new ``F`` is
``F^ S1 + S2 - B^ S3`` with sums ``S`` of per-pixel terms that depend on the photo and the
matte only: they are summed once, and a coarse pass costs a few operations per bin. Only the
last pass (3x3 px) works per pixel, on the previous pass's per-pixel ``F`` and ``B``. On a
7 MP photo with a U2-Net mask that is about 0.25 s of one core; memory peaks near 30 bytes a
pixel (the 2 px grids). The loops are compiled with numba (installed with pymatting, which
rembg needs) and release the GIL; a large crop runs as two row bands on two threads.
Compiling takes several seconds once per process: `warmup` pays it up front.
Deterministic: bands write disjoint rows and bins, and every sum runs in a fixed order.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from imaging import foreground_kernels as kernels

PARALLEL_MIN_PIXELS = 1 << 20
"""Crops smaller than this run on one thread: the hand-off would cost more than it saves."""

# The cascade, tuned together on the synthetic ground truth (see the module docstring).
_WEIGHT_POWER = 3  # sample weights a^p (foreground) and (1 - a)^p (background)
_MIN_COARSEST = 16  # the coarse passes use bins of 2, 4, 8, ... px, up to the first size (at
# least this) whose window reaches across the whole crop from any bin: a soft zone of any width
# then still gets the colours of the nearest opaque pixels (a long soft ramp stays clean).
# Statistics are binned by 2 (kernels.pixel_stats), then 2x2 by 2x2 (kernels.bin2).
_MARGIN = 64  # context (px) kept around the soft pixels' bounding box
_LEVEL_RADIUS = 2  # window radius of the coarse passes, in bins (5x5 bins)
_FINE_RADIUS = 1  # window radius of the last pass, in pixels, at full resolution (3x3)

_FIRST_BIN = _MIN_COARSEST  # the first pass's bins are this size or coarser


def estimate_foreground(rgb: np.ndarray, alpha: np.ndarray, *, threads: int = 2) -> np.ndarray:
    """Return a copy of ``rgb`` (HxWx3 uint8) whose soft pixels (0 < alpha < 255) hold the
    estimated foreground colour; every other pixel is copied unchanged.

    ``alpha`` (HxW uint8) is the matte that mixed subject and background in ``rgb``: the
    model's mask, not an input image's own transparency. ``threads``: how many row bands of a
    large image run at once (1: all on the caller's thread).
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be HxWx3 uint8, got {rgb.shape} {rgb.dtype}")
    if alpha.shape != rgb.shape[:2] or alpha.dtype != np.uint8:
        raise ValueError(
            f"alpha must be HxW uint8 {rgb.shape[:2]}, got {alpha.shape} {alpha.dtype}"
        )
    out = np.array(rgb, order="C", copy=True)
    box = soft_bbox(alpha)
    if box is None:
        return out
    h_img, w_img = alpha.shape
    x0, y0, x1, y1 = box
    x0, y0 = max(0, x0 - _MARGIN), max(0, y0 - _MARGIN)
    x1, y1 = min(w_img, x1 + _MARGIN), min(h_img, y1 + _MARGIN)
    _estimate_crop(_readonly(rgb), out, _readonly(alpha), y0, x0, y1 - y0, x1 - x0, max(1, threads))
    return out


def soft_bbox(alpha: np.ndarray) -> tuple[int, int, int, int] | None:
    """(left, top, right, bottom) of the pixels with 0 < alpha < 255; None if there are none."""
    soft = (alpha != 0) & (alpha != 255)
    rows = np.flatnonzero(soft.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(soft[rows[0] : rows[-1] + 1].any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def warmup() -> None:
    """Compile the pixel loops now (several seconds, once per process), not on a first request."""
    rgb = np.zeros((40, 40, 3), np.uint8)
    alpha = np.zeros((40, 40), np.uint8)
    alpha[10:30, 10:30] = 128
    alpha[15:25, 15:25] = 255
    estimate_foreground(rgb, alpha, threads=1)


def _readonly(a: np.ndarray) -> np.ndarray:
    """A C-contiguous read-only view (or copy): the compiled loops see one array type only,
    so they are compiled once, whatever the caller passes."""
    v = np.ascontiguousarray(a).view()
    v.flags.writeable = False
    return v


def _luts() -> np.ndarray:
    """(256, 12) float32 per-alpha terms: cF1, cF2, cF3, wF, cB1, cB2, cB3, wB (see kernels.NSTATS),
    then a, 1 - a, a/d, (1 - a)/d (the correction: F = F^ + r a/d, B = B^ + r (1 - a)/d)."""
    a = np.arange(256, dtype=np.float64) / 255.0
    wf, wb = a**_WEIGHT_POWER, (1.0 - a) ** _WEIGHT_POWER
    d = a * a + (1.0 - a) ** 2
    cols = [
        wf * (1.0 - a) ** 2 / d,
        wf * a / d,
        wf * a * (1.0 - a) / d,
        wf,
        wb * a * a / d,
        wb * (1.0 - a) / d,
        wb * a * (1.0 - a) / d,
        wb,
        a,
        1.0 - a,
        a / d,
        (1.0 - a) / d,
    ]
    return np.ascontiguousarray(np.stack(cols, axis=1), dtype=np.float32)


def _levels(h: int, w: int) -> list[int]:
    """Bin sizes of the coarse passes, coarsest first: ..., 8, 4, 2."""
    s = _MIN_COARSEST
    while s * _LEVEL_RADIUS < max(h, w):  # a window reaches _LEVEL_RADIUS bins either side
        s *= 2
    return [s >> i for i in range(s.bit_length() - 1)]


def _bands(n: int, parts: int, align: int) -> list[tuple[int, int]]:
    """``parts`` row bands [r0, r1) covering ``n`` rows, each starting on a multiple of
    ``align`` (so bands that sum rows into bins of that height write disjoint bins)."""
    step = -(-n // max(1, parts))
    step = -(-step // align) * align
    return [(r, min(n, r + step)) for r in range(0, n, step)]


class _Bands:
    """Runs a compiled loop over row bands of a grid: on a pool of threads for a large crop,
    on the caller's thread otherwise. A context manager: the pool ends with it."""

    def __init__(self, parts: int) -> None:
        self.parts = parts
        self.pool = ThreadPoolExecutor(parts) if parts > 1 else None

    def __enter__(self) -> _Bands:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown()

    def run(self, fn: Callable[..., Any], n: int, *args: Any, align: int = 1) -> None:
        """fn(*args, r0, r1) over row bands of [0, n), on the pool's threads if there is one."""
        if self.pool is None:
            fn(*args, 0, n)
            return
        bands = _bands(n, self.parts, align)
        for f in [self.pool.submit(fn, *args, r0, r1) for r0, r1 in bands]:
            f.result()

    def box_sums(self, g: np.ndarray, r: int) -> np.ndarray:
        """Window sums of g, written over g (its values are not needed afterwards)."""
        tmp = np.empty_like(g)
        self.run(kernels.box_rows, g.shape[0], g, r, tmp)
        self.run(kernels.box_cols, g.shape[0], tmp, r, g)
        return g

    def bin2(self, g: np.ndarray) -> np.ndarray:
        """Sums of 2x2 bins of g (the next coarser grid)."""
        res = np.empty(((g.shape[0] + 1) // 2, (g.shape[1] + 1) // 2, g.shape[2]), np.float32)
        self.run(kernels.bin2, res.shape[0], g, res)
        return res

    def means_of(self, sums: np.ndarray) -> np.ndarray:
        """The window means F^ and B^ (6 channels) of a grid of window sums."""
        res = np.empty((sums.shape[0], sums.shape[1], 6), np.float32)
        self.run(kernels.means_grid, sums.shape[0], sums, res)
        return res


def _estimate_crop(
    rgb: np.ndarray,
    out: np.ndarray,
    alpha: np.ndarray,
    oy: int,
    ox: int,
    h: int,
    w: int,
    threads: int,
) -> None:
    """Run the cascade on the crop (oy, ox, h, w); soft pixels of ``out`` are overwritten."""
    luts = _luts()
    with _Bands(threads if h * w >= PARALLEL_MIN_PIXELS else 1) as bands:
        levels = _levels(h, w)
        base = levels[-1]  # the statistics grid is the finest coarse level
        stats = np.zeros((-(-h // base), -(-w // base), kernels.NSTATS), np.float32)
        first = np.zeros((-(-h // _FIRST_BIN), -(-w // _FIRST_BIN), kernels.NSUMS), np.float32)
        bands.run(
            kernels.pixel_stats, h, rgb, alpha, oy, ox, w, luts, stats, first, align=_FIRST_BIN
        )
        grids = {base: stats}
        for s in levels[-2::-1]:
            grids[s] = bands.bin2(grids[s // 2])
        for _ in range(levels[0].bit_length() - _FIRST_BIN.bit_length()):
            first = bands.bin2(first)
        sums = bands.box_sums(first, _LEVEL_RADIUS)
        for s in levels[1:]:
            g = grids.pop(s)
            means = bands.means_of(sums)
            cols = _lerp_table(g.shape[1], 2, means.shape[1])
            sums = np.empty((g.shape[0], g.shape[1], kernels.NSUMS), np.float32)
            bands.run(kernels.next_level, g.shape[0], g, means, *cols, sums)
            del g, means
            sums = bands.box_sums(sums, _LEVEL_RADIUS)
        means = bands.means_of(sums)
        del sums
        cols = _lerp_table(w, base, means.shape[1])
        crop = (rgb, out, alpha, oy, ox, h, w)
        bands.run(kernels.fine_pass, h, *crop, luts, means, base, *cols, _FINE_RADIUS)


def _lerp_table(n: int, s: int, n_grid: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear sampling of a grid of ``n_grid`` bins of size ``s`` at the centres of ``n``
    pixels (or bins of size 1/s of it): the two bins and the weight of the second, per pixel."""
    t = (np.arange(n, dtype=np.float64) + 0.5) / s - 0.5
    t = np.clip(t, 0.0, n_grid - 1)
    i0 = np.minimum(np.floor(t).astype(np.int64), n_grid - 1)
    i1 = np.minimum(i0 + 1, n_grid - 1)
    return i0, i1, (t - i0).astype(np.float32)
