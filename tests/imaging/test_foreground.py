"""estimate_foreground: accuracy on synthetic ground truth, exactness, shapes, edge cases.

Ground truth: a real photo as the true foreground F, mixed through a known soft matte a (a disc
with a wide blurred rim plus hair-like strands) over saturated and textured backgrounds B:
I = aF + (1 - a)B. Error: mean |F_est - F| over the soft pixels. The bar is pymatting's
`estimate_foreground_ml` (what rembg's `decontaminate` runs), computed here on the same input.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
from PIL import Image

from imaging.foreground import estimate_foreground, soft_bbox
from imaging.matte_truth import composite, edge_error, synthetic_matte
from tests.support.shared import photo

H, W = 360, 480
BACKGROUNDS = ["red", "green", "blue", "textured"]
SOLID = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}


def _photo(name: str) -> np.ndarray:
    image = Image.open(photo(name)).convert("RGB").resize((W, H), Image.Resampling.LANCZOS)
    return np.asarray(image)


@cache
def _case(background: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(I, alpha, true F) for one background; F is the horse photo, 'textured' the boat one."""
    fg = _photo("horse.jpg")
    alpha = synthetic_matte(H, W, seed=3)
    bg = _photo("boat.jpg") if background == "textured" else np.array(SOLID[background])
    return composite(fg, bg, alpha), alpha, fg


def _pymatting_ml(image: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    from pymatting import estimate_foreground_ml

    est = estimate_foreground_ml(image / 255.0, alpha / 255.0)
    return np.clip(est * 255.0 + 0.5, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("background", BACKGROUNDS)
@pytest.mark.usefixtures("shared_data")
def test_error_at_most_pymatting_ml_and_half_of_raw(background: str) -> None:
    image, alpha, truth = _case(background)
    ours = edge_error(estimate_foreground(image, alpha), truth, alpha)
    raw = edge_error(image, truth, alpha)
    ml = edge_error(_pymatting_ml(image, alpha), truth, alpha)
    assert ours <= 1.1 * ml, f"ours {ours:.2f} vs pymatting ML {ml:.2f}"
    assert ours <= 0.5 * raw, f"ours {ours:.2f} vs raw cut-out {raw:.2f}"


def test_matte_has_wide_soft_borders_and_strands() -> None:
    """The ground truth exercises what matters: many soft pixels, over the whole alpha range."""
    alpha = synthetic_matte(H, W, seed=3)
    soft = (alpha > 0) & (alpha < 255)
    assert soft.mean() > 0.15
    assert (alpha[soft] < 64).mean() > 0.2 and (alpha[soft] > 192).mean() > 0.1


@pytest.mark.usefixtures("shared_data")
def test_opaque_pixels_exact_clear_pixels_unchanged_and_deterministic() -> None:
    image, alpha, _ = _case("textured")
    out = estimate_foreground(image, alpha)
    assert out.shape == image.shape and out.dtype == np.uint8
    hard = (alpha == 0) | (alpha == 255)
    np.testing.assert_array_equal(out[hard], image[hard])
    assert (out != image).any(axis=2)[~hard].mean() > 0.5  # the soft pixels did change
    np.testing.assert_array_equal(estimate_foreground(image, alpha), out)


def test_two_threads_give_the_same_bytes_as_one() -> None:
    """Large crops run in two row bands at once; the result must not depend on it."""
    rng = np.random.default_rng(1)
    h, w = 1200, 1000  # above PARALLEL_MIN_PIXELS
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    alpha = np.asarray(Image.fromarray(synthetic_matte(h // 4, w // 4)).resize((w, h)))
    one = estimate_foreground(image, alpha, threads=1)
    two = estimate_foreground(image, alpha, threads=2)
    np.testing.assert_array_equal(one, two)


@pytest.mark.parametrize("value", [0, 255])
def test_empty_and_full_masks_return_the_photo(value: int) -> None:
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
    alpha = np.full((50, 70), value, np.uint8)
    out = estimate_foreground(image, alpha)
    np.testing.assert_array_equal(out, image)
    assert out is not image
    assert soft_bbox(alpha) is None


def test_uniform_photo_keeps_its_colour() -> None:
    image = np.full((64, 64, 3), (90, 140, 200), np.uint8)
    alpha = np.full((64, 64), 128, np.uint8)
    np.testing.assert_array_equal(estimate_foreground(image, alpha), image)


def test_saturated_background_is_removed_from_a_soft_ramp() -> None:
    """A grey subject fading into pure green: the raw ramp is green-tinted, ours is grey."""
    w = 200
    alpha = np.tile(np.clip((np.arange(w) - 60) * 3, 0, 255).astype(np.uint8), (80, 1))
    image = composite(np.full((80, w, 3), 128, np.uint8), np.array((0, 255, 0)), alpha)
    out = estimate_foreground(image, alpha).astype(int)
    soft = (alpha > 25) & (alpha < 255)  # below 10% the colour is barely determined
    assert np.abs(out[soft] - 128).max() <= 6
    assert np.abs(image[soft].astype(int) - 128).max() > 60


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (9, 1), (2, 3), (33, 17)])
def test_tiny_images(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, shape, dtype=np.uint8)
    out = estimate_foreground(image, alpha)
    assert out.shape == image.shape and out.dtype == np.uint8
    hard = (alpha == 0) | (alpha == 255)
    np.testing.assert_array_equal(out[hard], image[hard])


def test_read_only_and_strided_inputs() -> None:
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, (40, 60), dtype=np.uint8)
    image.flags.writeable = False
    strided = estimate_foreground(image[:, ::2], alpha[:, ::2])
    copied = estimate_foreground(np.array(image[:, ::2]), np.array(alpha[:, ::2]))
    np.testing.assert_array_equal(strided, copied)


def test_soft_bbox() -> None:
    alpha = np.zeros((20, 30), np.uint8)
    alpha[5:9, 10:20] = 255
    alpha[3, 12] = 7
    alpha[15, 25] = 254
    assert soft_bbox(alpha) == (12, 3, 26, 16)


def test_rejects_bad_shapes_and_dtypes() -> None:
    image = np.zeros((10, 10, 3), np.uint8)
    with pytest.raises(ValueError):
        estimate_foreground(image, np.zeros((10, 11), np.uint8))
    with pytest.raises(ValueError):
        estimate_foreground(image, np.zeros((10, 10), np.float32))
    with pytest.raises(ValueError):
        estimate_foreground(image[:, :, :2], np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError):
        estimate_foreground(image.astype(np.float32), np.zeros((10, 10), np.uint8))
