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
from numba import njit
from PIL import Image, ImageDraw, ImageFilter

PARALLEL_MIN_PIXELS = 1 << 20
"""Crops smaller than this run on one thread: the hand-off would cost more than it saves."""

# The cascade, tuned together on the synthetic ground truth (see the module docstring).
_WEIGHT_POWER = 3  # sample weights a^p (foreground) and (1 - a)^p (background)
_MIN_COARSEST = 16  # the coarse passes use bins of 2, 4, 8, ... px, up to the first size (at
# least this) whose window reaches across the whole crop from any bin: a soft zone of any width
# then still gets the colours of the nearest opaque pixels (a long soft ramp stays clean).
# Statistics are binned by 2 (_pixel_stats), then 2x2 by 2x2 (_bin2).
_MARGIN = 64  # context (px) kept around the soft pixels' bounding box
_LEVEL_RADIUS = 2  # window radius of the coarse passes, in bins (5x5 bins)
_FINE_RADIUS = 1  # window radius of the last pass, in pixels, at full resolution (3x3)

# Per-pixel terms summed over 2x2 px bins ("stats"), by channel:
# 0-2 sum cF2*I, 3-5 sum cB2*I, 6 cF1, 7 cF3, 8 wF, 9 cB1, 10 cB3, 11 wB
# where, with d = a^2 + (1-a)^2, the new F of a pixel is F^ cF1/wF + I cF2/wF - B^ cF3/wF:
# cF1 = wF (1-a)^2/d, cF2 = wF a/d, cF3 = wF a(1-a)/d, and for B: cB1 = wB a^2/d,
# cB2 = wB (1-a)/d, cB3 = wB a(1-a)/d. Window sums ("sums"): 0-2 wF*F, 3 wF, 4-6 wB*B, 7 wB;
# the first pass's (F = B = I) are summed straight from the pixels into 16 px bins.
_NSTATS = 12
_NSUMS = 8
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
    """(256, 12) float32 per-alpha terms: cF1, cF2, cF3, wF, cB1, cB2, cB3, wB (see _NSTATS),
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
    parts = threads if h * w >= PARALLEL_MIN_PIXELS else 1
    pool = ThreadPoolExecutor(parts) if parts > 1 else None

    def run(fn: Callable[..., Any], n: int, *args: Any, align: int = 1) -> None:
        """fn(*args, r0, r1) over row bands of [0, n), on the pool's threads if there is one."""
        if pool is None:
            fn(*args, 0, n)
            return
        for f in [pool.submit(fn, *args, r0, r1) for r0, r1 in _bands(n, parts, align)]:
            f.result()

    def box_sums(g: np.ndarray, r: int) -> np.ndarray:
        """Window sums of g, written over g (its values are not needed afterwards)."""
        tmp = np.empty_like(g)
        run(_box_rows, g.shape[0], g, r, tmp)
        run(_box_cols, g.shape[0], tmp, r, g)
        return g

    def bin2(g: np.ndarray) -> np.ndarray:
        res = np.empty(((g.shape[0] + 1) // 2, (g.shape[1] + 1) // 2, g.shape[2]), np.float32)
        run(_bin2, res.shape[0], g, res)
        return res

    def means_of(sums: np.ndarray) -> np.ndarray:
        res = np.empty((sums.shape[0], sums.shape[1], 6), np.float32)
        run(_means_grid, sums.shape[0], sums, res)
        return res

    try:
        levels = _levels(h, w)
        base = levels[-1]  # the statistics grid is the finest coarse level
        stats = np.zeros((-(-h // base), -(-w // base), _NSTATS), np.float32)
        first = np.zeros((-(-h // _FIRST_BIN), -(-w // _FIRST_BIN), _NSUMS), np.float32)
        run(_pixel_stats, h, rgb, alpha, oy, ox, w, luts, stats, first, align=_FIRST_BIN)
        grids = {base: stats}
        for s in levels[-2::-1]:
            grids[s] = bin2(grids[s // 2])
        for _ in range(levels[0].bit_length() - _FIRST_BIN.bit_length()):
            first = bin2(first)
        sums = box_sums(first, _LEVEL_RADIUS)
        for s in levels[1:]:
            g = grids.pop(s)
            means = means_of(sums)
            cols = _lerp_table(g.shape[1], 2, means.shape[1])
            sums = np.empty((g.shape[0], g.shape[1], _NSUMS), np.float32)
            run(_next_level, g.shape[0], g, means, *cols, sums)
            del g, means
            sums = box_sums(sums, _LEVEL_RADIUS)
        means = means_of(sums)
        del sums
        cols = _lerp_table(w, base, means.shape[1])
        run(_fine_pass, h, rgb, out, alpha, oy, ox, h, w, luts, means, base, *cols, _FINE_RADIUS)
    finally:
        if pool is not None:
            pool.shutdown()


def _lerp_table(n: int, s: int, n_grid: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear sampling of a grid of ``n_grid`` bins of size ``s`` at the centres of ``n``
    pixels (or bins of size 1/s of it): the two bins and the weight of the second, per pixel."""
    t = (np.arange(n, dtype=np.float64) + 0.5) / s - 0.5
    t = np.clip(t, 0.0, n_grid - 1)
    i0 = np.minimum(np.floor(t).astype(np.int64), n_grid - 1)
    i1 = np.minimum(i0 + 1, n_grid - 1)
    return i0, i1, (t - i0).astype(np.float32)


# Hot loops index with non-negative loop variables on pre-sliced views: numba then drops its
# negative-index handling and LLVM can vectorise (about 3x on the box sums).


@njit(nogil=True, cache=True)
def _pixel_stats(
    rgb: np.ndarray,
    alpha: np.ndarray,
    oy: int,
    ox: int,
    w: int,
    luts: np.ndarray,
    stats: np.ndarray,
    first: np.ndarray,
    r0: int,
    r1: int,
) -> None:
    """Sum the per-pixel terms of crop rows [r0, r1) into 2 px bins (``stats``, see _NSTATS)
    and the first pass's weighted photo into 16 px bins (``first``, see _NSUMS)."""
    for y in range(r0, r1):
        arow = alpha[oy + y, ox : ox + w]
        crow = rgb[oy + y, ox : ox + w]
        srow = stats[y >> 1]
        frow = first[y >> 4]
        for x in range(w):
            av = arow[x]
            g = srow[x >> 1]
            f = frow[x >> 4]
            c0 = np.float32(crow[x, 0])
            c1 = np.float32(crow[x, 1])
            c2 = np.float32(crow[x, 2])
            if av == 255:  # cF2 = wF = 1, the rest 0
                g[0] += c0
                g[1] += c1
                g[2] += c2
                g[8] += 1.0
                f[0] += c0
                f[1] += c1
                f[2] += c2
                f[3] += 1.0
            elif av == 0:  # cB2 = wB = 1, the rest 0
                g[3] += c0
                g[4] += c1
                g[5] += c2
                g[11] += 1.0
                f[4] += c0
                f[5] += c1
                f[6] += c2
                f[7] += 1.0
            else:
                t = luts[av]
                g[0] += t[1] * c0
                g[1] += t[1] * c1
                g[2] += t[1] * c2
                g[3] += t[5] * c0
                g[4] += t[5] * c1
                g[5] += t[5] * c2
                g[6] += t[0]
                g[7] += t[2]
                g[8] += t[3]
                g[9] += t[4]
                g[10] += t[6]
                g[11] += t[7]
                f[0] += t[3] * c0
                f[1] += t[3] * c1
                f[2] += t[3] * c2
                f[3] += t[3]
                f[4] += t[7] * c0
                f[5] += t[7] * c1
                f[6] += t[7] * c2
                f[7] += t[7]


@njit(nogil=True, cache=True)
def _bin2(g: np.ndarray, out: np.ndarray, r0: int, r1: int) -> None:
    """Rows [r0, r1) of ``out`` = sums of g over 2x2 blocks: the same statistics on a grid of
    twice the bin size."""
    gh, gw, c = g.shape
    for y in range(r0, r1):
        dst = out[y]
        for k in range(dst.shape[0]):
            for i in range(c):
                dst[k, i] = 0.0
        for j in range(2 * y, min(gh, 2 * y + 2)):
            src = g[j]
            for x in range(gw):
                a = src[x]
                b = dst[x >> 1]
                for i in range(c):
                    b[i] += a[i]


@njit(nogil=True, cache=True)
def _box_rows(g: np.ndarray, r: int, out: np.ndarray, r0: int, r1: int) -> None:
    """out[y] = sum of g's rows y-r..y+r (those inside the grid), for y in [r0, r1).
    Direct sums of non-negative terms, not running sums: no drift, empty stays zero."""
    gh = g.shape[0]
    n = g.shape[1] * g.shape[2]
    src = g.reshape(gh, n)
    dst = out.reshape(gh, n)
    for y in range(r0, r1):
        acc = dst[y]
        for i in range(n):
            acc[i] = 0.0
        for j in range(max(0, y - r), min(gh, y + r + 1)):
            row = src[j]
            for i in range(n):
                acc[i] += row[i]


@njit(nogil=True, cache=True)
def _box_cols(g: np.ndarray, r: int, out: np.ndarray, r0: int, r1: int) -> None:
    """out[y, x] = sum of g[y, x-r..x+r] (bins inside the grid), for rows [r0, r1)."""
    gh, gw, c = g.shape
    n = gw * c
    src = g.reshape(gh, n)
    dst = out.reshape(gh, n)
    for y in range(r0, r1):
        acc = dst[y]
        row = src[y]
        for i in range(n):
            acc[i] = row[i]
        for d in range(c, min(r * c, n - c) + 1, c):
            lo, hi = acc[: n - d], row[d:]
            for i in range(n - d):
                lo[i] += hi[i]
            lo, hi = acc[d:], row[: n - d]
            for i in range(n - d):
                lo[i] += hi[i]


@njit(nogil=True, cache=True)
def _clip255(v: float) -> float:
    return min(np.float32(255.0), max(np.float32(0.0), v))


@njit(nogil=True, cache=True)
def _means_grid(sums: np.ndarray, m: np.ndarray, r0: int, r1: int) -> None:
    """Rows [r0, r1) of m = window means F^ (0-2) and B^ (3-5) per bin, clipped to 0..255;
    0 for an empty window. Sampling means rather than sums is safe: a window spans 5 bins,
    so the bins next to any pixel all see that pixel's own (non-zero) weight."""
    for y in range(r0, r1):
        src = sums[y]
        dst = m[y]
        for x in range(src.shape[0]):
            v = src[x]
            o = dst[x]
            wf = np.float32(1.0) / v[3] if v[3] > 0.0 else np.float32(0.0)
            wb = np.float32(1.0) / v[7] if v[7] > 0.0 else np.float32(0.0)
            for k in range(3):
                o[k] = _clip255(v[k] * wf)
                o[3 + k] = _clip255(v[4 + k] * wb)


@njit(nogil=True, cache=True)
def _lerp_row(m: np.ndarray, ya: int, yb: int, ty: float, out: np.ndarray) -> None:
    """out = rows ya and yb of grid m blended (weight ty on yb): vertical bilinear sampling."""
    n = m.shape[1] * m.shape[2]
    top = m[ya].reshape(n)
    bot = m[yb].reshape(n)
    dst = out.reshape(n)
    t = np.float32(ty)
    for i in range(n):
        dst[i] = top[i] + t * (bot[i] - top[i])


@njit(nogil=True, cache=True)
def _next_level(
    stats: np.ndarray,
    means: np.ndarray,
    xa: np.ndarray,
    xb: np.ndarray,
    tx: np.ndarray,
    n: np.ndarray,
    r0: int,
    r1: int,
) -> None:
    """Per-bin sums of a pass for bin rows [r0, r1), from the previous (twice coarser) pass's
    means: a bin's sum of the corrected F is F^ sum(cF1) + sum(cF2 I) - B^ sum(cF3), B alike."""
    gw = stats.shape[1]
    ph = means.shape[0]
    row = np.empty((means.shape[1], 6), np.float32)
    for y in range(r0, r1):
        t = (y + 0.5) / 2.0 - 0.5
        ya = min(max(int(np.floor(t)), 0), ph - 1)
        _lerp_row(means, ya, min(ya + 1, ph - 1), max(0.0, t - ya), row)
        srow = stats[y]
        nrow = n[y]
        for x in range(gw):
            a, b, w1 = xa[x], xb[x], tx[x]
            st = srow[x]
            o = nrow[x]
            for k in range(3):
                f = row[a, k] + w1 * (row[b, k] - row[a, k])
                bg = row[a, 3 + k] + w1 * (row[b, 3 + k] - row[a, 3 + k])
                o[k] = f * st[6] + st[k] - bg * st[7]
                o[4 + k] = bg * st[9] + st[3 + k] - f * st[10]
            o[3] = st[8]
            o[7] = st[11]


@njit(nogil=True, cache=True)
def _fine_row(
    crow: np.ndarray,
    arow: np.ndarray,
    luts: np.ndarray,
    row: np.ndarray,
    xa: np.ndarray,
    xb: np.ndarray,
    tx: np.ndarray,
    rad: int,
    p: np.ndarray,
    hsum: np.ndarray,
) -> None:
    """One row of the last coarse pass, per pixel (``row``: that pass's means sampled at the
    row): the corrected (F, B) weighted as the fine pass sums them (wF F, wF, wB B, wB) into
    ``p``, then summed over 2*rad+1 columns into ``hsum``."""
    w = arow.shape[0]
    for x in range(w):
        av = arow[x]
        if av == 255:
            for k in range(3):
                p[k, x] = crow[x, k]
                p[4 + k, x] = 0.0
            p[3, x] = 1.0
            p[7, x] = 0.0
        elif av == 0:
            for k in range(3):
                p[k, x] = 0.0
                p[4 + k, x] = crow[x, k]
            p[3, x] = 0.0
            p[7, x] = 1.0
        else:
            ra, rb, t = row[xa[x]], row[xb[x]], tx[x]
            lut = luts[av]
            a, ia, ka, kb, wf, wb = lut[8], lut[9], lut[10], lut[11], lut[3], lut[7]
            for k in range(3):
                fh = ra[k] + t * (rb[k] - ra[k])
                bh = ra[3 + k] + t * (rb[3 + k] - ra[3 + k])
                res = np.float32(crow[x, k]) - a * fh - ia * bh
                p[k, x] = wf * _clip255(fh + ka * res)
                p[4 + k, x] = wb * _clip255(bh + kb * res)
            p[3, x] = wf
            p[7, x] = wb
    for k in range(_NSUMS):
        acc = hsum[k]
        src = p[k]
        for i in range(w):
            acc[i] = src[i]
        for d in range(1, min(rad, w - 1) + 1):
            lo, hi = acc[: w - d], src[d:]
            for i in range(w - d):
                lo[i] += hi[i]
            lo, hi = acc[d:], src[: w - d]
            for i in range(w - d):
                lo[i] += hi[i]


@njit(nogil=True, cache=True)
def _fine_pass(
    rgb: np.ndarray,
    out: np.ndarray,
    alpha: np.ndarray,
    oy: int,
    ox: int,
    h: int,
    w: int,
    luts: np.ndarray,
    means: np.ndarray,
    s: int,
    xa: np.ndarray,
    xb: np.ndarray,
    tx: np.ndarray,
    rad: int,
    r0: int,
    r1: int,
) -> None:
    """The last pass, at full resolution, for crop rows [r0, r1): sums over (2*rad+1)^2
    pixels of the last coarse pass's (F, B), then the correction; writes the soft pixels of
    ``out``. Rows of column sums are kept in a ring one row ahead of the row being finished;
    the rows next to the band are computed again rather than shared with the other band."""
    m = 2 * rad + 1
    gh = means.shape[0]
    ring = np.zeros((m, _NSUMS, w), np.float32)
    row = np.empty((means.shape[1], 6), np.float32)
    p = np.empty((_NSUMS, w), np.float32)
    vs = np.empty((_NSUMS, w), np.float32)
    lo, hi = max(0, r0 - rad), min(h, r1 + rad)
    for yy in range(lo, hi):
        t = (yy + 0.5) / s - 0.5
        ya = min(max(int(np.floor(t)), 0), gh - 1)
        _lerp_row(means, ya, min(ya + 1, gh - 1), max(0.0, t - ya), row)
        crow, arow = rgb[oy + yy, ox : ox + w], alpha[oy + yy, ox : ox + w]
        _fine_row(crow, arow, luts, row, xa, xb, tx, rad, p, ring[yy % m])
        y = yy - rad  # its window's last row is yy: finish it
        if y >= r0:
            _finish_row(rgb, out, alpha, oy, ox, h, w, y, rad, luts, ring, vs)
    for y in range(max(r0, hi - rad), r1):  # windows cut by the crop's bottom edge
        _finish_row(rgb, out, alpha, oy, ox, h, w, y, rad, luts, ring, vs)


@njit(nogil=True, cache=True)
def _finish_row(
    rgb: np.ndarray,
    out: np.ndarray,
    alpha: np.ndarray,
    oy: int,
    ox: int,
    h: int,
    w: int,
    y: int,
    rad: int,
    luts: np.ndarray,
    ring: np.ndarray,
    vs: np.ndarray,
) -> None:
    """Fine pass of crop row y: sum the ring's rows y-rad..y+rad, then correct the soft pixels."""
    m = ring.shape[0]
    ya, yb = max(0, y - rad), min(h, y + rad + 1)
    for k in range(_NSUMS):
        acc = vs[k]
        for i in range(w):
            acc[i] = 0.0
        for j in range(ya, yb):
            src = ring[j % m, k]
            for i in range(w):
                acc[i] += src[i]
    arow = alpha[oy + y, ox : ox + w]
    crow = rgb[oy + y, ox : ox + w]
    orow = out[oy + y, ox : ox + w]
    for x in range(w):
        av = arow[x]
        if av == 0 or av == 255:
            continue
        lut = luts[av]
        a, ia, ka = lut[8], lut[9], lut[10]
        fw = np.float32(1.0) / vs[3, x]  # > 0: the pixel's own weight is in its window
        bw = np.float32(1.0) / vs[7, x]
        for k in range(3):
            fh = _clip255(vs[k, x] * fw)
            bh = _clip255(vs[4 + k, x] * bw)
            res = np.float32(crow[x, k]) - a * fh - ia * bh
            orow[x, k] = np.uint8(_clip255(fh + ka * res) + np.float32(0.5))


# Synthetic ground truth, for the tests and the benchmark: photos whose true foreground colour
# is known at every soft pixel (real photos have no such ground truth).


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
