"""A real Ray cluster and Serve instance on 127.0.0.1 for the service tests.

One cluster per test session, with one logical GPU declared (there is no real
GPU here) so fractional-GPU placement can be proven. Apps are deployed under
their own route prefixes with settings built from synthetic RMBG-2.0 weights
(birefnet-lite at a small resolution) and the real u2netp model.
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import ray
from ray import serve

from deployments.app import build_app
from tests.support.birefnet_weights import write_synthetic_checkpoint
from tests.support.http import wait_for

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
IMAGES = SHARED / "images"
U2NETP = SHARED / "models" / "u2netp.onnx"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Synthetic birefnet-lite checkpoint and a U2NET_HOME holding the real u2netp."""
    root = tmp_path_factory.mktemp("models")
    rmbg = write_synthetic_checkpoint(root / "rmbg", "birefnet-lite")
    home = root / "u2net-home"
    home.mkdir()
    shutil.copy(U2NETP, home / "u2netp.onnx")
    return {"rmbg": rmbg, "u2net_home": home}


@pytest.fixture(scope="session")
def serve_url() -> Iterator[str]:
    """Start Ray (8 logical CPUs, 1 logical GPU) and Serve's HTTP proxy on 127.0.0.1."""
    port = _free_port()
    ray.init(
        num_cpus=8,
        num_gpus=1,
        include_dashboard=False,
        logging_level="warning",
        configure_logging=True,
    )
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="session")
def base_args(model_files: dict[str, Path]) -> dict[str, Any]:
    """Settings for a CPU-only app on the test models; each test app overrides some."""
    return {
        "model": "rmbg-2.0",
        "device": "cpu",
        "fallback": True,
        "rmbg_path": str(model_files["rmbg"]),
        "rmbg_arch": "birefnet-lite",
        "rmbg_resolution": 256,
        "rmbg_num_gpus": 0,
        "rmbg_num_cpus": 0.5,
        "rmbg_num_replicas": 1,
        "rmbg_batch_wait_timeout_s": 0.05,
        "u2net_model": "u2netp",
        "u2net_home": str(model_files["u2net_home"]),
        "u2net_allow_download": False,
        "u2net_num_cpus": 0.5,
        "u2net_num_replicas": 1,
        "u2net_threads": 1,
        "ingress_num_cpus": 0.5,
        "status_poll_interval_s": 0.5,
    }


Deploy = Callable[..., str]


@pytest.fixture(scope="session")
def deploy(serve_url: str, base_args: dict[str, Any]) -> Deploy:
    """Deploy (or update in place) an app under `/<name>`; returns its base URL."""

    def _deploy(name: str, **overrides: Any) -> str:
        args = {**base_args, **overrides}
        serve.run(build_app(args), name=name, route_prefix=f"/{name}")
        url = f"{serve_url}/{name}"
        wait_for(lambda: httpx.get(f"{url}/api/v1/health", timeout=30).status_code != 404)
        return url

    return _deploy
