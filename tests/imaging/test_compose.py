"""cutout, fit_to_ratio and compose_styled."""

from __future__ import annotations

import numpy as np
import pytest

from imaging.compose import compose_styled, cutout, fit_to_ratio, subject_bbox
from imaging.errors import InvalidOptionError
from imaging.options import Edges, Style, parse_edges


def _scene(w: int = 300, h: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """A textured photo and a mask with a rectangular subject in the middle."""
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([(x * 3) % 256, (y * 5) % 256, np.full_like(x, 90)], axis=2).astype(np.uint8)
    mask = np.zeros((h, w), np.uint8)
    mask[h // 4 : 3 * h // 4, w // 3 : 2 * w // 3] = 255
    return rgb, mask


def test_cutout_zeroes_rgb_under_transparent_alpha() -> None:
    rgb, mask = _scene()
    mask[0, 0] = 1  # barely visible: RGB must be kept
    out = cutout(rgb, mask)
    assert out.shape == (*mask.shape, 4) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:, :, 3], mask)
    assert not out[mask == 0][:, :3].any()
    np.testing.assert_array_equal(out[mask > 0][:, :3], rgb[mask > 0])


def test_cutout_multiplies_input_alpha() -> None:
    rgb, mask = _scene(10, 10)
    mask[:] = 255
    mask[0, 0] = 128
    alpha = np.full((10, 10), 255, np.uint8)
    alpha[0, 0] = 128
    alpha[5, 5] = 0
    out = cutout(rgb, mask, input_alpha=alpha)
    assert out[0, 0, 3] == 64
    assert out[5, 5, 3] == 0 and not out[5, 5, :3].any()
    assert out[9, 9, 3] == 255


def test_cutout_rejects_mismatched_mask() -> None:
    rgb, _ = _scene()
    with pytest.raises(ValueError):
        cutout(rgb, np.zeros((10, 10), np.uint8))


@pytest.mark.parametrize("ratio", [(1, 1), (4, 5), (16, 9), (9, 16), (3, 2)])
def test_fit_to_ratio_exact_and_centred(ratio: tuple[int, int]) -> None:
    rgb, mask = _scene(301, 199)
    rgba = cutout(rgb, mask)
    out = fit_to_ratio(rgba, ratio)
    ch, cw = out.shape[:2]
    assert cw * ratio[1] == ch * ratio[0]
    assert cw >= 301 and ch >= 199
    y0, x0 = (ch - 199) // 2, (cw - 301) // 2
    np.testing.assert_array_equal(out[y0 : y0 + 199, x0 : x0 + 301], rgba)
    assert out[:, :, 3].sum() == rgba[:, :, 3].sum()  # nothing else is opaque


def test_subject_bbox() -> None:
    _, mask = _scene()
    assert subject_bbox(mask) == (100, 50, 200, 150)
    mask[0, 0] = 10  # faint noise is ignored
    assert subject_bbox(mask) == (100, 50, 200, 150)
    assert subject_bbox(np.zeros((5, 5), np.uint8)) is None


def _bare(mask: np.ndarray) -> np.ndarray:
    """A mask with the same bounding box but (almost) no subject: same canvas, no shadow."""
    x0, y0, x1, y1 = subject_bbox(mask) or (0, 0, 1, 1)
    ghost = np.zeros_like(mask)
    ghost[y0, x0] = ghost[y1 - 1, x1 - 1] = 17
    return ghost


def _lum(px: np.ndarray) -> float:
    return float(px.astype(np.float64).mean())


@pytest.mark.parametrize("style", list(Style))
@pytest.mark.parametrize("ratio", [None, (4, 5), (16, 9), (1, 1)])
def test_styles_deterministic_exact_ratio_opaque(
    style: Style, ratio: tuple[int, int] | None
) -> None:
    rgb, mask = _scene()
    a = compose_styled(rgb, mask, style=style, ratio=ratio)
    b = compose_styled(rgb, mask, style=style, ratio=ratio)
    assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3
    assert a.tobytes() == b.tobytes()
    ch, cw = a.shape[:2]
    rw, rh = ratio if ratio is not None else (3, 2)
    assert cw * rh == ch * rw
    assert max(cw, ch) <= 2048


def _magenta_scene() -> tuple[np.ndarray, np.ndarray]:
    """A magenta subject (a colour no backdrop has) so the test can find it in the output."""
    rgb, mask = _scene()
    return np.where(mask[:, :, None] > 0, np.uint8([255, 0, 255]), rgb).astype(np.uint8), mask


def _magenta_box(out: np.ndarray) -> tuple[int, int, int, int]:
    m = (out[:, :, 0] > 200) & (out[:, :, 1] < 60) & (out[:, :, 2] > 200)
    ys, xs = np.nonzero(m)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


@pytest.mark.parametrize("style", list(Style))
def test_styles_shadow_under_subject(style: Style) -> None:
    rgb, mask = _magenta_scene()
    out = compose_styled(rgb, mask, style=style, ratio=(1, 1))
    bare = compose_styled(rgb, _bare(mask), style=style, ratio=(1, 1))
    assert out.shape == bare.shape
    x0, _, x1, bottom = _magenta_box(out)
    cx = (x0 + x1) // 2
    spot = (slice(bottom + 1, bottom + 5), slice(cx - 10, cx + 10))
    corners = [out[:8, :8], out[:8, -8:], out[-8:, :8], out[-8:, -8:]]
    assert _lum(out[spot]) < min(_lum(c) for c in corners)
    assert _lum(out[spot]) < 0.7 * _lum(bare[spot])


def test_subject_centred_with_margin() -> None:
    rgb, mask = _magenta_scene()
    out = compose_styled(rgb, mask, style=Style.MINIMAL, ratio=(1, 1))
    n = out.shape[0]
    x0, y0, x1, y1 = _magenta_box(out)
    assert abs((x0 + x1) / 2 - n / 2) <= 2 and abs((y0 + y1) / 2 - n / 2) <= 2
    assert min(x0, y0) >= n * 0.08 and max(x1, y1) <= n * 0.92
    assert min(x0, y0) <= n * 0.12  # the subject is scaled to fill the inner box


def test_empty_mask_gives_background() -> None:
    rgb, mask = _scene()
    for style in Style:
        out = compose_styled(rgb, np.zeros_like(mask), style=style, ratio=None)
        assert out.shape[2] == 3 and out.shape[1] * 2 == out.shape[0] * 3


def test_tiny_subject_not_upscaled_absurdly_and_big_capped() -> None:
    rgb = np.zeros((1000, 1000, 3), np.uint8)
    mask = np.zeros((1000, 1000), np.uint8)
    mask[500:510, 500:510] = 255
    small = compose_styled(rgb, mask, style=Style.MINIMAL, ratio=(1, 1))
    assert small.shape[0] <= 2 * 10 / 0.8 + 2
    big_rgb = np.zeros((3000, 2400, 3), np.uint8)
    big_mask = np.full((3000, 2400), 255, np.uint8)
    big = compose_styled(big_rgb, big_mask, style=Style.MOOD, ratio=None)
    assert max(big.shape[:2]) <= 2048 and big.shape[1] * 5 == big.shape[0] * 4


def test_input_alpha_hides_subject() -> None:
    rgb, mask = _scene()
    clear = np.zeros_like(mask)
    out = compose_styled(rgb, mask, style=Style.MINIMAL, ratio=None, input_alpha=clear)
    bare = compose_styled(rgb, np.zeros_like(mask), style=Style.MINIMAL, ratio=None)
    np.testing.assert_array_equal(out, bare)


@pytest.mark.parametrize("style", list(Style))
def test_subject_cut_by_bottom_edge_stands_on_canvas_bottom(style: Style) -> None:
    """A bust (mask touching the photo's bottom) is not left floating with a cut edge."""
    h, w = 300, 200
    rgb = np.full((h, w, 3), 30, np.uint8)
    mask = np.zeros((h, w), np.uint8)
    mask[120:, 60:140] = 255  # subject runs off the bottom of the photo
    out = compose_styled(rgb, mask, style=style, ratio=(4, 5))
    # The bottom row under the subject's centre is the subject (value 30), not backdrop.
    cx = out.shape[1] // 2
    assert np.abs(out[-1, cx].astype(int) - 30).max() <= 2
    # A subject that does not touch the bottom keeps its margin below.
    floating = mask.copy()
    floating[-20:] = 0
    out = compose_styled(rgb, floating, style=style, ratio=(4, 5))
    assert np.abs(out[-1, cx].astype(int) - 30).max() > 2


# --- edges: refined (estimated foreground colour at soft mask pixels) or raw -----------------


def _fringe_scene() -> tuple[np.ndarray, np.ndarray]:
    """A grey subject with a wide soft rim, photographed over pure green: I = aF + (1 - a)B."""
    h, w = 120, 160
    y, x = np.mgrid[0:h, 0:w]
    dist = np.hypot(x - w / 2, y - h / 2)
    mask = np.clip((45 - dist) * 255 / 20, 0, 255).astype(np.uint8)  # opaque core, 20 px rim
    a = mask[:, :, None] / 255.0
    rgb = np.round(a * 128 + (1 - a) * np.array([0, 255, 0])).astype(np.uint8)
    return rgb, mask


def _greenness(px: np.ndarray) -> float:
    px = px.astype(float)
    return float((px[..., 1] - (px[..., 0] + px[..., 2]) / 2).mean())


def test_cutout_refined_edges_drop_the_old_background() -> None:
    rgb, mask = _fringe_scene()
    refined = cutout(rgb, mask)  # refined is the default
    raw = cutout(rgb, mask, edges="raw")
    np.testing.assert_array_equal(refined[:, :, 3], raw[:, :, 3])  # alpha is the mask either way
    soft = (mask > 25) & (mask < 255)
    assert _greenness(raw[soft][:, :3]) > 60
    assert abs(_greenness(refined[soft][:, :3])) < 5
    opaque = mask == 255
    np.testing.assert_array_equal(refined[opaque], raw[opaque])
    assert not refined[mask == 0][:, :3].any()


def test_cutout_raw_edges_keep_the_photo_colours() -> None:
    rgb, mask = _fringe_scene()
    out = cutout(rgb, mask, edges=Edges.RAW)
    np.testing.assert_array_equal(out[mask > 0][:, :3], rgb[mask > 0])


def test_cutout_refined_keeps_colours_the_input_made_transparent() -> None:
    """An RGBA photo stores straight colours: its own soft alpha is not un-mixed."""
    rgb, mask = _fringe_scene()
    input_alpha = np.full(mask.shape, 255, np.uint8)
    input_alpha[:, :40] = 100
    out = cutout(rgb, mask, input_alpha=input_alpha)
    kept = (input_alpha < 255) & (out[:, :, 3] > 0)
    np.testing.assert_array_equal(out[kept][:, :3], rgb[kept])
    refined = (input_alpha == 255) & (mask > 25) & (mask < 255)
    assert abs(_greenness(out[refined][:, :3])) < 5


@pytest.mark.parametrize("style", list(Style))
def test_styled_refined_edges_drop_the_old_background(style: Style) -> None:
    rgb, mask = _fringe_scene()
    raw = compose_styled(rgb, mask, style=style, ratio=(1, 1), edges="raw")
    refined = compose_styled(rgb, mask, style=style, ratio=(1, 1))
    assert raw.shape == refined.shape
    changed = np.abs(raw.astype(int) - refined).max(axis=2) > 3
    assert changed.any()
    # The change is a ring (the soft rim), and there the green cast is gone.
    assert _greenness(raw[changed]) > _greenness(refined[changed]) + 15
    assert _greenness(refined[changed]) < 10


def test_edges_option_parsing() -> None:
    assert parse_edges(None) is Edges.REFINED and parse_edges(" ") is Edges.REFINED
    assert parse_edges("RAW") is Edges.RAW and parse_edges("refined") is Edges.REFINED
    assert parse_edges("", default=Edges.RAW) is Edges.RAW
    with pytest.raises(InvalidOptionError, match="raw"):
        parse_edges("soft")
    rgb, mask = _fringe_scene()
    with pytest.raises(ValueError):
        cutout(rgb, mask, edges="soft")
    with pytest.raises(ValueError):
        compose_styled(rgb, mask, style=Style.MOOD, ratio=None, edges="soft")
