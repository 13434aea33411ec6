"""A real Ray cluster and Serve instance on 127.0.0.1 for the service tests.

One cluster for this package (its fixtures are package-scoped: the cluster and its apps go
when the package's last test has run, not at the end of the whole run), with one logical
GPU declared (there is no real GPU here) so fractional-GPU placement can be proven. Apps
are deployed under their own route prefixes with settings built from synthetic RMBG-2.0
weights (birefnet-lite at a small resolution) and the real u2netp model.
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import ray
from ray import serve
from ray.dashboard.modules.serve.sdk import ServeSubmissionClient
from ray.serve.context import _get_global_client

from deployments.settings import ServiceSettings
from tests.support.birefnet_weights import write_synthetic_checkpoint
from tests.support.http import health, wait_for
from tests.support.shared import U2NETP

if TYPE_CHECKING:
    from ray.serve._private.application_state import StatusOverview


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="package")
def model_files(shared_data: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Synthetic birefnet-lite checkpoint and a U2NET_HOME holding the real u2netp (every
    app's, so every test on an app requests `shared_data` through this)."""
    root = tmp_path_factory.mktemp("models")
    rmbg = write_synthetic_checkpoint(root / "rmbg", "birefnet-lite")
    home = root / "u2net-home"
    home.mkdir()
    shutil.copy(U2NETP, home / "u2netp.onnx")
    return {
        "rmbg": rmbg,
        "u2net_home": home,
        "openvino_cache": root / "openvino",
        "u2net_tuning": root / "tuning",
    }


@pytest.fixture(scope="package")
def cluster() -> Iterator[dict[str, str]]:
    """Ray (16 logical CPUs, 1 logical GPU) with its dashboard, which serves Serve's REST API.

    Logical CPUs only gate scheduling: 16 lets every test app's replicas (0.5 CPU
    each) be placed at once on this 2-core machine.
    """
    dashboard_port = _free_port()
    ray.init(
        num_cpus=16,
        num_gpus=1,
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        dashboard_port=dashboard_port,
        logging_level="warning",
    )
    try:
        yield {
            "dashboard": f"http://127.0.0.1:{dashboard_port}",
            "serve": f"http://127.0.0.1:{_free_port()}",
        }
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="package")
def base_args(model_files: dict[str, Path]) -> dict[str, Any]:
    """Settings for a CPU-only app on the test models; each test app overrides some."""
    return {
        "device": "cpu",
        "rmbg_path": str(model_files["rmbg"]),
        "rmbg_arch": "birefnet-lite",
        "rmbg_resolution": 256,
        "rmbg_num_gpus": 0,
        "rmbg_num_cpus": 0.5,
        "rmbg_num_replicas": 1,
        # RMBG-2.0 on the CPU runs on OpenVINO (the default): converted once per package run
        "rmbg_cache_dir": str(model_files["openvino_cache"]),
        # U2-Net's runtime choice is measured once per package run, then reused by every app
        "u2net_tuning_cache_dir": str(model_files["u2net_tuning"]),
        "rmbg_batch_wait_timeout_s": 0.05,
        "u2net_model": "u2netp",
        "u2net_home": str(model_files["u2net_home"]),
        "u2net_allow_download": False,
        "u2net_num_cpus": 0.5,
        "u2net_num_replicas": 1,
        "u2net_threads": 1,
        "ingress_num_cpus": 0.5,
        # each app's ingress polls Serve's status (every app's, so the cost grows with the
        # apps alive) and its replicas' while requests come: 4 u2net-only apps took 107% of
        # a core at 0.5 s, 62% at 1 s (2-core EPYC); several stay deployed while others'
        # tests run, so an app that has had no request for 5 s stops polling until its next
        "status_poll_interval_s": 1.0,
        "status_poll_idle_after_s": 5.0,
        # the tests read replica details from health
        "health_details": True,
        # several test apps share this machine: each ingress reserves memory for its budget
        "max_pixels": 20_000_000,
        "max_output_pixels": 20_000_000,
        "ingress_pixel_budget": 40_000_000,
    }


class ServeDeployer:
    """Declarative deploys through Serve's REST API, as `serve deploy` does.

    Keeps the whole multi-app config: each call changes one app and PUTs the
    lot; apps whose config did not change are left as they are, and a change
    confined to `deployments: user_config` is applied in place by Serve.
    """

    def __init__(self, cluster: dict[str, str], base_args: dict[str, Any]) -> None:
        self._cluster = cluster
        self._base_args = base_args
        self._apps: dict[str, dict[str, Any]] = {}

    def url(self, name: str) -> str:
        return f"{self._cluster['serve']}/{name}"

    def app_name(self, url: str) -> str:
        """The name of the app deployed at `url` (its route prefix)."""
        prefix = f"{self._cluster['serve']}/"
        assert url.startswith(prefix), url
        return url.removeprefix(prefix)

    def deploy(
        self,
        name: str,
        deployments: dict[str, dict[str, Any]] | None = None,
        env_vars: dict[str, str] | None = None,
        **args: Any,
    ) -> str:
        """Deploy or update app `name` under `/<name>`; returns its base URL. ``env_vars``
        go to the app's `runtime_env` (its build and its replicas see them)."""
        app = {
            "name": name,
            "route_prefix": f"/{name}",
            "import_path": "deployments.app:build_app",
            "args": {**self._base_args, **args},
            "deployments": [{"name": k, **v} for k, v in (deployments or {}).items()],
        }
        if env_vars:
            app["runtime_env"] = {"env_vars": env_vars}
        if self._apps.get(name) == app:
            return self.url(name)
        before = _last_deployed(name)
        self._apps[name] = app
        self._put()
        wait_for(lambda: _applied(name, before), timeout_s=180)
        # Serve reports RUNNING before in-place reconfigures reach the replicas:
        # wait until every group says it runs the user_config just deployed.
        wait_for(lambda: self._reconfigured(name, app), timeout_s=60)
        return self.url(name)

    def _reconfigured(self, name: str, app: dict[str, Any]) -> bool:
        environ = app.get("runtime_env", {}).get("env_vars", {})
        settings = ServiceSettings.load(environ=environ, **app["args"])
        overrides = {d["name"]: d.get("user_config") for d in app["deployments"]}
        routing = overrides.get("Ingress") or settings.routing_user_config()
        keys = str(app["args"].get("api_keys") or "").split(",")
        headers = {"X-Api-Key": keys[0]} if keys[0] else None
        live = health(self.url(name), headers=headers).json()["routing"]
        if any(live[key] != value for key, value in routing.items()):
            return False
        groups = {"U2Net": settings.u2net_user_config()}
        if settings.deploys_rmbg:
            groups["RMBG2"] = settings.rmbg_user_config()
        for deployment, default in groups.items():
            expected = overrides.get(deployment) or default
            status = serve.get_deployment_handle(deployment, name).status.remote().result()
            if status["user_config"] != expected:
                return False
        return True

    def delete(self, name: str) -> None:
        if self._apps.pop(name, None) is not None:
            self._put()
            wait_for(lambda: _app_status(name) is None, timeout_s=60)

    def _put(self) -> None:
        port = int(self._cluster["serve"].rsplit(":", 1)[1])
        config = {
            "http_options": {"host": "127.0.0.1", "port": port},
            "applications": list(self._apps.values()),
        }
        # The client `serve deploy` uses: it adds the cluster's auth token to the PUT.
        ServeSubmissionClient(self._cluster["dashboard"]).deploy_applications(config)


def _app_status(name: str) -> StatusOverview | None:
    """One app's status as the Serve controller has it; None where there is no such app (or
    no Serve yet: the first deploy starts it).

    Not `serve.status()`: that asks the controller for every app's full details and parses
    them here, 156-236 ms of this process's CPU per call with eight apps of three
    deployments (2-core EPYC), against 1 ms for this; the deploy waits poll four times a
    second, in the process whose tests are the run's critical path.
    """
    client = _get_global_client(raise_if_no_controller_running=False)
    if client is None:
        return None
    status = client.get_serve_status(name)
    return None if status.app_status.status == "NOT_STARTED" else status


def _last_deployed(name: str) -> float | None:
    status = _app_status(name)
    return None if status is None else status.app_status.deployment_timestamp


def _applied(name: str, before: float | None) -> bool:
    status = _app_status(name)
    if status is None or status.app_status.deployment_timestamp == before:
        return False
    app = status.app_status
    if app.status == "DEPLOY_FAILED":
        raise AssertionError(f"deploying {name} failed: {app.message}")
    return app.status == "RUNNING" and all(
        d.status == "HEALTHY" for d in status.deployment_statuses
    )


@pytest.fixture(scope="package")
def deployer(cluster: dict[str, str], base_args: dict[str, Any]) -> ServeDeployer:
    wait_for(lambda: httpx.get(cluster["dashboard"], timeout=5).status_code < 500)
    return ServeDeployer(cluster, base_args)


@pytest.fixture(scope="package")
def deploy(deployer: ServeDeployer) -> Callable[..., str]:
    return deployer.deploy


@pytest.fixture(scope="package")
def base_app(deploy: Callable[..., str], deployer: ServeDeployer) -> Iterator[str]:
    """The app on `base_args` alone (RMBG-2.0 on synthetic birefnet-lite first, the real
    u2netp behind it), deployed once for test_api.py (which reads it as deployed) and
    test_fallback.py's in-place rollouts (which put it back as deployed after them)."""
    yield deploy("main")
    deployer.delete("main")


@pytest.fixture(scope="package")
def u2netp_settings_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The u2netp app's .env file, as the migration guide writes one."""
    path = tmp_path_factory.mktemp("env") / ".env"
    path.write_text("# the guide's rollback to U2-Net\nBG_REMOVAL_MODEL=u2net\n")
    return path


@pytest.fixture(scope="package")
def u2netp_app(deploy: Callable[..., str], u2netp_settings_file: Path) -> str:
    """A U2-Net-only app on the real u2netp, shared by the modules that only need a mask
    and by test_fallback.py's check of what `model=u2net` deploys (one deployment for all
    of them, kept for the package).

    Its model comes from a .env file named by `BG_REMOVAL_ENV_FILE` in the app's runtime_env,
    not from its args: every test on this app runs on settings read from a .env file by
    Serve's build task (another process than this one) and handed to the replicas.
    """
    env_vars = {"BG_REMOVAL_ENV_FILE": str(u2netp_settings_file)}
    return deploy("u2netp", env_vars=env_vars, u2net_model="u2netp")


@pytest.fixture(scope="package")
def dialects_app(deploy: Callable[..., str]) -> str:
    """A U2-Net-only app (real u2netp) that fetches image URLs, for the rembg and remove.bg
    dialects' tests: `url_fetch=allowlist` naming 127.0.0.1/32 (the tests' image servers
    listen there; nothing else is reachable), no API keys (rembg's documented requests send
    none)."""
    return deploy(
        "dialects",
        model="u2net",
        u2net_model="u2netp",
        url_fetch="allowlist",
        url_fetch_allowlist="127.0.0.1/32",
    )


@pytest.fixture(scope="package")
def keyed_app_keys() -> tuple[str, str]:
    """The two API keys `keyed_app` accepts."""
    return ("test-key-one", "test-key-two")


@pytest.fixture(scope="package")
def keyed_app_key(keyed_app_keys: tuple[str, str]) -> str:
    """One API key `keyed_app` accepts."""
    return keyed_app_keys[0]


@pytest.fixture(scope="package")
def keyed_app_origin() -> str:
    """The one origin `keyed_app` allows cross-origin requests from."""
    return "https://shop.example"


@pytest.fixture(scope="package")
def keyed_app(
    deploy: Callable[..., str], keyed_app_keys: tuple[str, str], keyed_app_origin: str
) -> str:
    """A U2-Net-only app (real u2netp) that needs an API key (either of `keyed_app_keys`),
    shows no details in health and allows one origin (`keyed_app_origin`): for the tests of
    access (test_reliability.py) and of each dialect's auth errors."""
    return deploy(
        "keyed",
        model="u2net",
        u2net_model="u2netp",
        api_keys=",".join(keyed_app_keys),
        health_details=False,
        cors_allow_origins=keyed_app_origin,
    )


@pytest.fixture(scope="package")
def tight_upload_bytes() -> int:
    """`tight_app`'s upload limit."""
    return 2_000_000


@pytest.fixture(scope="package")
def tight_app(deploy: Callable[..., str], tight_upload_bytes: int) -> str:
    """Small budgets everywhere: 2 MB uploads, 1 MP in, 1 MP out, 2 MP in flight, a U2-Net
    queue of 1 (test_reliability.py's budgets, test_api.py's upload limit)."""
    return deploy(
        "tight",
        model="u2net",
        max_upload_bytes=tight_upload_bytes,
        max_pixels=1_000_000,
        max_output_pixels=1_000_000,
        ingress_pixel_budget=2_000_000,
        u2net_max_ongoing_requests=1,
        u2net_max_queued_requests=1,
        deployments={"U2Net": {"user_config": {"max_batch_size": 1, "batch_wait_timeout_s": 0}}},
    )
