"""Routing and fallback through real HTTP: every trigger, with fallback on and off."""

from __future__ import annotations

import io
from collections.abc import Iterator
from functools import cache

import numpy as np
import pytest
import ray
from PIL import Image
from ray import serve

from deployments.settings import ServiceSettings
from tests.support.http import health, post_image, wait_for
from tests.support.onnx_models import write_u2net_shaped_onnx
from tests.support.replicas import kill_replica, replica_actor_names
from tests.support.shared import IMAGES


@cache
def _photo() -> bytes:
    """horse.jpg, at most 320 px, as JPEG (made on first use, not at import)."""
    image = Image.open(IMAGES / "horse.jpg").convert("RGB")
    image.thumbnail((320, 320))
    out = io.BytesIO()
    image.save(out, "JPEG")
    return out.getvalue()


def _assert_fallback(response, reason_prefix: str) -> None:
    assert response.status_code == 200, response.text
    assert response.headers["x-model-used"] == "u2net"
    assert response.headers["x-fallback-reason"].startswith(reason_prefix), response.headers


def _assert_503_naming(response, cause: str) -> None:
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "model_unavailable"
    assert cause in error["message"]
    assert "fallback is off" in error["message"]


def _routing(**changes: object) -> dict[str, dict[str, object]]:
    """An in-place rollout of the ingress: `deployments: - name: Ingress user_config: ...`."""
    return {"Ingress": {"user_config": {"model": "rmbg-2.0", "fallback": True, **changes}}}


def _rmbg_batching(**changes: object) -> dict[str, dict[str, object]]:
    """An in-place rollout of the RMBG-2.0 group's batching and chaos settings."""
    config = {"max_batch_size": 8, "batch_wait_timeout_s": 0.05, **changes}
    return {"RMBG2": {"user_config": config}}


class TestInPlaceRollouts:
    """Exception and timeout triggers, and batch settings, all changed by `user_config`
    rollouts on one app; none of them may restart a replica."""

    @pytest.fixture(scope="class")
    @classmethod
    def url(cls, base_app: str, deploy, deployer) -> Iterator[str]:
        """The conftest's `base_app` (test_api.py's too), put back as deployed and healthy
        afterwards, whatever a failed test left."""
        yield base_app
        deploy(deployer.app_name(base_app))
        wait_for(lambda: health(base_app).json()["status"] == "healthy", timeout_s=120)

    @pytest.fixture(scope="class")
    @classmethod
    def app(cls, url: str, deployer) -> str:
        return deployer.app_name(url)

    @pytest.fixture(scope="class")
    @classmethod
    def pids(cls, app: str) -> dict[str, int]:
        handle = serve.get_deployment_handle("RMBG2", app)
        return {"RMBG2": handle.status.remote().result()["pid"]}

    def test_exception_falls_back(self, app: str, deploy, url: str, pids: dict[str, int]) -> None:
        deploy(app, deployments=_rmbg_batching(chaos_error_rate=1.0))
        _assert_fallback(post_image(url, _photo()), "error:injected_fault")

    def test_exception_without_fallback_is_503(self, app: str, deploy, url: str) -> None:
        deploy(
            app,
            deployments={**_rmbg_batching(chaos_error_rate=1.0), **_routing(fallback=False)},
        )
        _assert_503_naming(post_image(url, _photo()), "error:injected_fault")

    def test_timeout_falls_back(self, app: str, deploy, url: str) -> None:
        deploy(app, deployments=_routing(rmbg_timeout_s=0.001))
        _assert_fallback(post_image(url, _photo()), "timeout")

    def test_timeout_without_fallback_is_503(self, app: str, deploy, url: str) -> None:
        deploy(app, deployments=_routing(rmbg_timeout_s=0.001, fallback=False))
        _assert_503_naming(post_image(url, _photo()), "timeout")

    def test_last_model_timeout_is_504(self, app: str, deploy, url: str) -> None:
        deploy(app, deployments=_routing(rmbg_timeout_s=0.001, u2net_timeout_s=0.001))
        response = post_image(url, _photo())
        assert response.status_code == 504, response.text
        error = response.json()["error"]
        assert error["code"] == "timeout"
        assert "RMBG-2.0: timeout" in error["message"]

    def test_back_to_normal(self, app: str, deploy, url: str) -> None:
        deploy(app)
        response = post_image(url, _photo())
        assert response.status_code == 200
        assert response.headers["x-model-used"] == "rmbg-2.0"

    def test_batch_size_rollout_applies_in_place(
        self, app: str, deploy, url: str, pids: dict[str, int]
    ) -> None:
        handle = serve.get_deployment_handle("RMBG2", app)
        default = ServiceSettings.model_fields["rmbg_max_batch_size"].default
        assert handle.status.remote().result()["max_batch_size"] == default
        deploy(app, deployments=_rmbg_batching(max_batch_size=3, batch_wait_timeout_s=0.2))
        after = handle.status.remote().result()
        assert after["max_batch_size"] == 3
        assert after["batch_wait_timeout_s"] == pytest.approx(0.2)
        assert after["pid"] == pids["RMBG2"], "user_config rollouts must not restart replicas"

    def test_replica_killed_falls_back_then_recovers(self, app: str, deploy, url: str) -> None:
        deploy(app)
        _kill_replicas_and_wait(app, url)
        _assert_fallback(post_image(url, _photo()), "no_live_replica")
        # Serve replaces the killed replica; RMBG-2.0 serves again.
        wait_for(lambda: health(url).json()["status"] == "healthy", timeout_s=120)
        assert post_image(url, _photo()).headers["x-model-used"] == "rmbg-2.0"

    def test_replica_killed_without_fallback_is_503(self, app: str, deploy, url: str) -> None:
        deploy(app, deployments=_routing(fallback=False))
        wait_for(lambda: health(url).json()["replicas"]["rmbg-2.0"] == 1, timeout_s=120)
        _kill_replicas_and_wait(app, url)
        _assert_503_naming(post_image(url, _photo()), "no_live_replica")
        wait_for(lambda: health(url).json()["status"] == "healthy", timeout_s=120)
        deploy(app)


def _kill_replicas_and_wait(app: str, url: str) -> None:
    """Kill every RMBG-2.0 replica; wait until the ingress has seen that none is live."""
    for name in replica_actor_names(app, "RMBG2"):
        kill_replica(name)
    wait_for(lambda: health(url).json()["replicas"]["rmbg-2.0"] == 0, timeout_s=30)


class TestLoadFailure:
    MISSING = "/nonexistent/no-such-checkpoint"

    @pytest.fixture(scope="class")
    @classmethod
    def url(cls, deploy, deployer) -> Iterator[str]:
        yield deploy("broken", rmbg_path=cls.MISSING)
        deployer.delete("broken")

    def test_health_is_degraded_and_says_why(self, url: str) -> None:
        body = wait_for(lambda: _degraded(url), timeout_s=30)
        assert body["model_loaded"] is False
        assert body["fallback_reason"] == "load_failed:weights_not_found"
        status = body["models"]["rmbg-2.0"]["status"]
        assert status["error"]["code"] == "weights_not_found"
        assert "no-such-checkpoint" in status["error"]["message"]

    def test_request_falls_back(self, url: str) -> None:
        _assert_fallback(post_image(url, _photo()), "load_failed:weights_not_found")

    def test_without_fallback_is_503_and_unhealthy(self, deploy, url: str) -> None:
        deploy("broken", rmbg_path=self.MISSING, deployments=_routing(fallback=False))
        _assert_503_naming(post_image(url, _photo()), "load_failed:weights_not_found")
        response = health(url)
        assert response.status_code == 503
        assert response.json()["status"] == "unhealthy"


def _degraded(url: str) -> dict | None:
    body = health(url).json()
    return body if body["status"] == "degraded" else None


def test_u2net_mode_deploys_no_rmbg_and_claims_no_gpu(u2netp_app: str, deployer) -> None:
    """`model=u2net` (from the app's .env: the settings that `deploy(..., model="u2net")`
    gives), on the conftest's session app."""
    url, app = u2netp_app, deployer.app_name(u2netp_app)
    deployments = serve.status().applications[app].deployments
    # RMBG2 exists (so config files that tune it stay valid) with zero replicas.
    assert set(deployments) == {"Ingress", "U2Net", "RMBG2"}
    assert sum(deployments["RMBG2"].replica_states.values()) == 0
    body = health(url).json()
    assert body["status"] == "healthy"
    assert body["model_name"] == "u2net"
    assert body["replicas"]["rmbg-2.0"] == 0
    response = post_image(url, _photo())
    assert response.status_code == 200
    assert response.headers["x-model-used"] == "u2net"
    assert "x-fallback-reason" not in response.headers
    # Nothing in this app holds a GPU share.
    from ray.util.state import list_actors

    address = ray.get_runtime_context().gcs_address  # this session's cluster only
    alive = [("state", "=", "ALIVE")]
    for actor in list_actors(address=address, filters=alive, limit=1000, detail=True):
        if actor.name and actor.name.startswith(f"SERVE_REPLICA::{app}#"):
            assert not actor.required_resources.get("GPU"), actor


def test_nothing_can_serve_is_unhealthy_503(deploy, deployer, tmp_path_factory) -> None:
    bad = write_u2net_shaped_onnx(tmp_path_factory.mktemp("bad") / "bad.onnx", bad_shape=True)
    url = deploy("dead", rmbg_path="/nonexistent", u2net_path=str(bad))
    response = wait_for(lambda: (r := health(url)).status_code == 503 and r, timeout_s=30)
    assert response.json()["status"] == "unhealthy"
    assert response.json()["fallback"]["error"]["code"] == "weights_invalid_model"
    error = post_image(url, _photo()).json()["error"]
    assert error["code"] == "model_unavailable"
    assert "U2-Net cannot serve" in error["message"]
    deployer.delete("dead")


def test_two_replicas_share_one_logical_gpu(deploy, deployer) -> None:
    url = deploy("gpu", rmbg_num_gpus=0.5, rmbg_num_replicas=2, device="cpu")
    body = wait_for(lambda: (b := health(url).json())["replicas"]["rmbg-2.0"] == 2 and b)
    assert body["status"] == "healthy"
    handle = serve.get_deployment_handle("RMBG2", "gpu")
    seen: dict[str, list[str]] = {}
    for _ in range(40):
        status = handle.status.remote().result()
        seen[status["replica_id"]] = status["gpu_ids"]
        if len(seen) == 2:
            break
    assert len(seen) == 2, "both replicas should answer"
    assert all(ids == ["0"] for ids in seen.values()), seen
    assert ray.available_resources().get("GPU", 0) == pytest.approx(0)
    responses = [post_image(url, _photo()) for _ in range(4)]
    assert all(r.headers["x-model-used"] == "rmbg-2.0" for r in responses)
    deployer.delete("gpu")
    arr = np.asarray(Image.open(io.BytesIO(responses[0].content)))
    assert arr.shape[2] == 4
