"""`post_process_mask` is rembg's `post_process` (its `ppm`), bit for bit, in strips too."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from imaging.mask_post import post_process_mask
from imaging.options import RenderOptions
from imaging.pipeline import MaskOutcome, remove_background


def _masks(shape: tuple[int, int], seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    noise = (rng.random(shape) * 255).astype(np.uint8)
    smooth = ndimage.gaussian_filter(rng.random(shape) * 255, 2)
    smooth = ((smooth - smooth.min()) / (np.ptp(smooth) + 1e-9) * 255).astype(np.uint8)
    return [noise, smooth, np.where(smooth > 128, 255, 0).astype(np.uint8)]


@pytest.fixture(scope="module")
def rembg_post_process() -> Callable[[np.ndarray], np.ndarray]:
    """rembg's own `post_process`, imported only here: importing rembg compiles pymatting's
    numba kernels on a fresh install (tests/test_heavy_imports.py)."""
    from rembg.bg import post_process

    return post_process


@pytest.mark.parametrize("shape", [(1, 5), (2, 2), (25, 9), (37, 53), (300, 200)])
@pytest.mark.parametrize("strip_rows", [1, 7, 13, 256])
def test_matches_rembg_post_process(
    shape: tuple[int, int], strip_rows: int, rembg_post_process: Callable[[np.ndarray], np.ndarray]
) -> None:
    for seed, mask in enumerate(_masks(shape, seed=sum(shape))):
        expected = rembg_post_process(mask)
        got = post_process_mask(mask, strip_rows=strip_rows)
        assert got.dtype == np.uint8 and np.array_equal(got, expected), (shape, seed)


def test_the_pipeline_applies_it_to_the_mask_before_compose(
    rembg_post_process: Callable[[np.ndarray], np.ndarray],
) -> None:
    mask = _masks((40, 30), seed=3)[1]
    buffer = io.BytesIO()
    Image.new("RGB", (30, 40), (200, 100, 50)).save(buffer, "PNG")

    def masker(rgb: np.ndarray) -> MaskOutcome:
        return MaskOutcome(mask, "test")

    fields = {"channels": "alpha", "post_process_mask": "true"}
    result = remove_background(buffer.getvalue(), RenderOptions.parse(fields), masker)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(result.body))), rembg_post_process(mask))
    plain = remove_background(buffer.getvalue(), RenderOptions.parse({"channels": "alpha"}), masker)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(plain.body))), mask)
