"""The model registry: every tier is found by its name, loads from its own config, and
tells the input size the service resizes to."""

from __future__ import annotations

import numpy as np
import pytest

from models.registry import (
    RMBG,
    TIERS,
    U2NET,
    RMBGLoadConfig,
    U2NetLoadConfig,
    get_tier,
    load_predictor,
)
from tests.support.shared import U2NETP


def test_tiers_are_named_as_the_api_reports_them() -> None:
    assert list(TIERS) == [RMBG, U2NET] == ["rmbg-2.0", "u2net"]
    assert {t.deployment for t in TIERS.values()} == {"RMBG2", "U2Net"}
    assert get_tier(U2NET).config_type is U2NetLoadConfig
    with pytest.raises(ValueError, match=r"known models are rmbg-2\.0, u2net"):
        get_tier("sam")


def test_a_tier_loads_only_from_its_own_config() -> None:
    with pytest.raises(TypeError, match="U2NetLoadConfig"):
        load_predictor(U2NET, RMBGLoadConfig(source="/nowhere"))


@pytest.mark.usefixtures("shared_data")
def test_u2net_through_the_registry() -> None:
    config = U2NetLoadConfig(
        model_name="u2netp",
        path=str(U2NETP),
        runtime="onnxruntime",
        threads=1,
        allow_download=False,
    )
    predictor = load_predictor(U2NET, config)
    spec = get_tier(U2NET).input_size(config, predictor)
    assert (spec.width, spec.height) == (320, 320)
    photo = np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8)
    (mask,) = predictor.predict([photo])
    assert mask.shape == (90, 120) and mask.dtype == np.uint8


def test_rmbg_input_is_its_resolution() -> None:
    config = RMBGLoadConfig(source="/nowhere", arch="birefnet-lite", resolution=256)
    spec = get_tier(RMBG).input_size(config, None)
    assert (spec.width, spec.height) == (256, 256)
