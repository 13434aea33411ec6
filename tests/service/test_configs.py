"""Every shipped Serve config is valid for Serve and for our settings, without a cluster."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from deployments.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = [ROOT / "serve_config.yaml", *sorted((ROOT / "configs").glob("*.yaml"))]
DEPLOYMENTS = {"Ingress", "RMBG2", "U2Net"}
#: Time a request may spend in the ingress beyond its mask deadline (decode, compose, encode).
PROXY_MARGIN_S = 10


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_is_valid(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in [v for v in os.environ if v.startswith("BG_REMOVAL_")]:
        monkeypatch.delenv(var)
    schema = ServeDeploySchema(**yaml.safe_load(path.read_text()))
    for app in schema.applications:
        assert app.import_path == "deployments.app:build_app"
        settings = ServiceSettings(**(app.args or {}))
        assert {d.name for d in app.deployments} <= DEPLOYMENTS
        for deployment in app.deployments:
            assert set(deployment.user_config) <= {"max_batch_size", "batch_wait_timeout_s"}
        if path.name in {"cpu.yaml", "u2net-cpu.yaml"}:
            assert settings.device == "cpu"
            assert not settings.rmbg_num_gpus
        if path.name == "serve_config.yaml":
            assert settings.rmbg_num_gpus == 0.5
        # The proxy must outlast every request's deadline plus decode/encode, or clients
        # get the proxy's plain-text timeout instead of the service's JSON 504.
        proxy_timeout = schema.http_options.request_timeout_s
        assert proxy_timeout is not None, "set http_options.request_timeout_s"
        assert proxy_timeout >= settings.request_deadline_s + PROXY_MARGIN_S, path.name


def test_u2net_env_var_with_the_default_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """BG_REMOVAL_MODEL=u2net still works with serve_config.yaml, which tunes RMBG2."""
    monkeypatch.setenv("BG_REMOVAL_MODEL", "u2net")
    config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    settings = ServiceSettings(**config["applications"][0]["args"])
    assert settings.model == "u2net"
    assert not settings.deploys_rmbg


def test_cuda_without_gpu_share_is_a_startup_error() -> None:
    with pytest.raises(ValueError, match="no GPU"):
        ServiceSettings(device="cuda", rmbg_num_gpus=0)
