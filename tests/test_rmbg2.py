"""The migration guide's RMBG-2.0 tests: `pytest tests/test_rmbg2.py -v`, runnable alone.

- load: the configured checkpoint (BG_REMOVAL_RMBG_PATH, `.env`, or the hub cache: nothing
  is downloaded here) loads through the service's loader and cuts a photo out, agreeing
  with U2-Net on the subject. Without weights it is skipped saying why; with
  `--require-rmbg` it fails instead.
- parity: our BiRefNet, in the RMBG-2.0 preset, has the checkpoint's exact key layout and
  reproduces the original implementation's logits (synthetic weights, shared vectors).
- fallback: weights that cannot load are a typed error naming the cause, and U2-Net cuts
  the photo out instead. (The service's own fallback, with `X-Fallback-Reason`, is driven
  over HTTP by tests/service/test_fallback.py.)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from bgremove.compare import DEFAULT_PHOTO, cut_out, load_models
from bgremove.errors import SetupError
from bgremove.local import load_masker
from bgremove.settings import cli_settings
from imaging import mask_metrics
from models.birefnet import BiRefNet, BiRefNetConfig
from models.registry import RMBG, U2NET
from models.rmbg_weights import build_birefnet
from tests.support.birefnet_weights import synthetic_state_dict
from tests.support.shared import BIREFNET, U2NETP


@pytest.fixture
def u2netp(shared_data: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The real u2netp as the U2-Net tier, from a private home (nothing downloaded)."""
    home = tmp_path / "u2net-home"
    home.mkdir()
    shutil.copy(U2NETP, home / "u2netp.onnx")
    monkeypatch.setenv("U2NET_HOME", str(home))
    monkeypatch.setenv("BG_REMOVAL_U2NET_MODEL", "u2netp")
    monkeypatch.setenv("BG_REMOVAL_U2NET_ALLOW_DOWNLOAD", "false")
    monkeypatch.setenv("BG_REMOVAL_U2NET_RUNTIME", "onnxruntime")
    monkeypatch.setenv("BG_REMOVAL_U2NET_TUNING_CACHE_DIR", "")


def test_the_configured_checkpoint_loads_and_cuts_out(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real RMBG-2.0 weights, where configured: the service's loader, a real photo."""
    monkeypatch.delenv("BG_REMOVAL_ENV_FILE", raising=False)  # the guide's ./.env counts here
    settings = cli_settings(model=RMBG)
    if settings.rmbg_path is None:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the hub cache only: no download in tests
    try:
        masker = load_masker(settings)
    except SetupError as exc:
        message = f"no RMBG-2.0 weights to test: {exc}"
        if request.config.getoption("--require-rmbg"):
            pytest.fail(message)
        pytest.skip(message)
    rmbg = cut_out(DEFAULT_PHOTO.read_bytes(), masker, settings.limits())
    assert rmbg.model == RMBG
    assert 0.05 < mask_metrics.foreground_share(rmbg.mask) < 0.95
    u2net_masker = load_masker(settings.model_copy(update={"model": U2NET}))
    u2net = cut_out(DEFAULT_PHOTO.read_bytes(), u2net_masker, settings.limits())
    # the same horse: two good models agree on the subject, whatever their edges
    assert mask_metrics.iou(rmbg.mask, u2net.mask) > 0.8


@pytest.fixture(scope="module")
def rmbg2_network() -> BiRefNet:
    """RMBG-2.0's network (Swin-L) on the parity vectors' synthetic weights."""
    return build_birefnet(synthetic_state_dict("rmbg-2.0"), BiRefNetConfig.preset("rmbg-2.0"))


@pytest.mark.usefixtures("shared_data")
def test_the_network_has_the_checkpoints_layout() -> None:
    manifest = json.loads((BIREFNET / "keys-rmbg-2.0.json").read_text())
    with torch.device("meta"):
        model = BiRefNet(BiRefNetConfig.preset("rmbg-2.0"))
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == manifest
    assert list(ours) == list(manifest)  # same order too


@pytest.mark.usefixtures("shared_data")
def test_the_network_matches_the_original_implementation(rmbg2_network: BiRefNet) -> None:
    vectors = np.load(BIREFNET / "parity-rmbg-2.0-256.npz")
    with torch.inference_mode():
        logits = rmbg2_network(torch.from_numpy(vectors["input"]))
    assert logits.shape == (2, 1, 256, 256)
    assert logits.dtype == torch.float32
    diff = (logits - torch.from_numpy(vectors["logits"])).abs().max().item()
    assert diff <= 1e-4, f"max abs logit difference {diff:.3g}"


def test_weights_that_cannot_load_fall_back_to_u2net(
    u2netp: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("BG_REMOVAL_RMBG_PATH", str(tmp_path / "not-downloaded"))
    settings = cli_settings()
    models = load_models(settings)
    assert models[RMBG].masker is None
    reason = models[RMBG].reason or ""
    assert "[weights_not_found]" in reason and "not-downloaded" in reason
    fallback = models[U2NET].masker
    assert fallback is not None
    cut = cut_out(DEFAULT_PHOTO.read_bytes(), fallback, settings.limits())
    assert cut.model == U2NET
    assert 0.05 < mask_metrics.foreground_share(cut.mask) < 0.95
