"""BiRefNet network: checkpoint key layout and numerical parity with the original code.

The RMBG-2.0 preset's layout and parity are in tests/test_rmbg2.py (the migration guide's
test file); this file holds BiRefNet_lite's and the network's other properties."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from models.birefnet import BiRefNet, BiRefNetConfig, image_patches
from models.rmbg_weights import build_birefnet
from tests.support.birefnet_weights import synthetic_state_dict
from tests.support.shared import BIREFNET

PRESETS = ("birefnet-lite",)


class _Models(dict):
    """Recipe-weight models built on first use and kept for the session (Swin-L takes seconds)."""

    def __missing__(self, preset: str) -> BiRefNet:
        model = build_birefnet(synthetic_state_dict(preset), BiRefNetConfig.preset(preset))
        self[preset] = model
        return model


@pytest.fixture(scope="session")
def synthetic_models() -> dict[str, BiRefNet]:
    return _Models()


@pytest.mark.usefixtures("shared_data")
@pytest.mark.parametrize("preset", PRESETS)
def test_state_dict_matches_manifest(preset: str) -> None:
    manifest = json.loads((BIREFNET / f"keys-{preset}.json").read_text())
    with torch.device("meta"):
        model = BiRefNet(BiRefNetConfig.preset(preset))
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == manifest
    assert list(ours) == list(manifest)  # same order too


@pytest.mark.usefixtures("shared_data")
@pytest.mark.parametrize("preset", PRESETS)
def test_parity_with_reference_logits(preset: str, synthetic_models: dict[str, BiRefNet]) -> None:
    vectors = np.load(BIREFNET / f"parity-{preset}-256.npz")
    model = synthetic_models[preset]
    with torch.inference_mode():
        logits = model(torch.from_numpy(vectors["input"]))
    assert logits.shape == (2, 1, 256, 256)
    assert logits.dtype == torch.float32
    diff = (logits - torch.from_numpy(vectors["logits"])).abs().max().item()
    assert diff <= 1e-4, f"max abs logit difference {diff:.3g}"


def test_strict_load_of_recipe_weights() -> None:
    model = BiRefNet(BiRefNetConfig.preset("birefnet-lite"))
    result = model.load_state_dict(synthetic_state_dict("birefnet-lite"), strict=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_presets_and_overrides() -> None:
    rmbg = BiRefNetConfig.preset("rmbg-2.0")
    assert (rmbg.embed_dim, rmbg.depths, rmbg.num_heads, rmbg.window_size) == (
        192,
        (2, 2, 18, 2),
        (6, 12, 24, 48),
        12,
    )
    assert rmbg.lateral_channels == (3072, 1536, 768, 384)
    assert rmbg.patch_order == "wg_hg_c"
    newer = BiRefNetConfig.preset("rmbg-2.0", patch_order="c_hg_wg")
    assert newer.patch_order == "c_hg_wg"
    with pytest.raises(ValueError):
        BiRefNetConfig.preset("rmbg-3.0")
    with pytest.raises(ValueError):
        BiRefNetConfig.preset("rmbg-2.0", patch_order="hg_wg_c")


def test_patch_orders() -> None:
    """(wg, hg, c): column by column, top to bottom, RGB inside; else (c, hg, wg)."""
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).view(2, 3, 4, 6)
    old = image_patches(x, (2, 3), "wg_hg_c")
    new = image_patches(x, (2, 3), "c_hg_wg")
    assert old.shape == new.shape == (2, 3 * 2 * 2, 2, 3)
    for row in range(2):
        for col in range(2):
            patch = x[:, :, row * 2 : row * 2 + 2, col * 3 : col * 3 + 3]
            for c in range(3):
                torch.testing.assert_close(old[:, (col * 2 + row) * 3 + c], patch[:, c])
                torch.testing.assert_close(new[:, c * 4 + row * 2 + col], patch[:, c])


def test_patch_order_changes_the_output(synthetic_models: dict[str, BiRefNet]) -> None:
    lite = synthetic_models["birefnet-lite"]
    other = build_birefnet(
        lite.state_dict(), BiRefNetConfig.preset("birefnet-lite", patch_order="c_hg_wg")
    )
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert not torch.allclose(lite(x), other(x))


def test_rejects_sizes_not_multiple_of_32(synthetic_models: dict[str, BiRefNet]) -> None:
    with pytest.raises(ValueError, match="multiples of 32"):
        synthetic_models["birefnet-lite"](torch.zeros(1, 3, 64, 80))


def test_non_square_input(synthetic_models: dict[str, BiRefNet]) -> None:
    with torch.inference_mode():
        out = synthetic_models["birefnet-lite"](torch.randn(1, 3, 64, 128))
    assert out.shape == (1, 1, 64, 128)
    assert torch.isfinite(out).all()
