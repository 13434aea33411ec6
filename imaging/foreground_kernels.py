"""The compiled pixel loops of `imaging.foreground`'s cascade (numba, GIL released).

Each loop works on the rows [r0, r1) it is given, so that `imaging.foreground` can run a
large crop as row bands on threads; bands write disjoint rows and bins, and every sum runs
in a fixed order (deterministic). The maths is in `imaging.foreground`'s docstring.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# Per-pixel terms summed over 2x2 px bins ("stats"), by channel:
# 0-2 sum cF2*I, 3-5 sum cB2*I, 6 cF1, 7 cF3, 8 wF, 9 cB1, 10 cB3, 11 wB
# where, with d = a^2 + (1-a)^2, the new F of a pixel is F^ cF1/wF + I cF2/wF - B^ cF3/wF:
# cF1 = wF (1-a)^2/d, cF2 = wF a/d, cF3 = wF a(1-a)/d, and for B: cB1 = wB a^2/d,
# cB2 = wB (1-a)/d, cB3 = wB a(1-a)/d. Window sums ("sums"): 0-2 wF*F, 3 wF, 4-6 wB*B, 7 wB;
# the first pass's (F = B = I) are summed straight from the pixels into 16 px bins.
NSTATS = 12
NSUMS = 8


# Hot loops index with non-negative loop variables on pre-sliced views: numba then drops its
# negative-index handling and LLVM can vectorise (about 3x on the box sums).


@njit(nogil=True, cache=True)
def pixel_stats(
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
    """Sum the per-pixel terms of crop rows [r0, r1) into 2 px bins (``stats``, see NSTATS)
    and the first pass's weighted photo into 16 px bins (``first``, see NSUMS)."""
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
def bin2(g: np.ndarray, out: np.ndarray, r0: int, r1: int) -> None:
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
def box_rows(g: np.ndarray, r: int, out: np.ndarray, r0: int, r1: int) -> None:
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
def box_cols(g: np.ndarray, r: int, out: np.ndarray, r0: int, r1: int) -> None:
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
def means_grid(sums: np.ndarray, m: np.ndarray, r0: int, r1: int) -> None:
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
def next_level(
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
    for k in range(NSUMS):
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
def fine_pass(
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
    ring = np.zeros((m, NSUMS, w), np.float32)
    row = np.empty((means.shape[1], 6), np.float32)
    p = np.empty((NSUMS, w), np.float32)
    vs = np.empty((NSUMS, w), np.float32)
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
    for k in range(NSUMS):
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
