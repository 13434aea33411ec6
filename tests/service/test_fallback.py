"""Routing and fallback through real HTTP: every trigger, with fallback on and off."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import ray
from PIL import Image
from ray import serve

from tests.support.http import health, post_image, wait_for
from tests.support.onnx_models import write_u2net_shaped_onnx

IMAGES = Path(__file__).resolve().parents[2].parent / "shared" / "images"


def _photo() -> bytes:
    image = Image.open(IMAGES / "horse.jpg").convert("RGB")
    image.thumbnail((320, 320))
    out = io.BytesIO()
    image.save(out, "JPEG")
    return out.getvalue()


PHOTO = _photo()


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


class TestExceptionAndTimeout:
    """Rollouts on one app: each changes only user_config, applied in place."""

    @pytest.fixture(scope="class")
    def url(self, deploy) -> str:
        return deploy("faults")

    def test_exception_falls_back(self, deploy, url: str) -> None:
        deploy("faults", rmbg_chaos_error_rate=1.0)
        _assert_fallback(post_image(url, PHOTO), "error:injected_fault")

    def test_exception_without_fallback_is_503(self, deploy, url: str) -> None:
        deploy("faults", rmbg_chaos_error_rate=1.0, fallback=False)
        _assert_503_naming(post_image(url, PHOTO), "error:injected_fault")

    def test_timeout_falls_back(self, deploy, url: str) -> None:
        deploy("faults", rmbg_timeout_s=0.001)
        _assert_fallback(post_image(url, PHOTO), "timeout")

    def test_timeout_without_fallback_is_503(self, deploy, url: str) -> None:
        deploy("faults", rmbg_timeout_s=0.001, fallback=False)
        _assert_503_naming(post_image(url, PHOTO), "timeout")

    def test_back_to_normal_after_rollout(self, deploy, url: str) -> None:
        deploy("faults")
        response = post_image(url, PHOTO)
        assert response.status_code == 200
        assert response.headers["x-model-used"] == "rmbg-2.0"

    def test_rollout_changes_batch_size_in_place(self, deploy, url: str) -> None:
        handle = serve.get_deployment_handle("RMBG2", "faults")
        before = handle.status.remote().result()
        deploy("faults", rmbg_max_batch_size=3, rmbg_batch_wait_timeout_s=0.2)
        after = handle.status.remote().result()
        assert before["max_batch_size"] == 8
        assert after["max_batch_size"] == 3
        assert after["batch_wait_timeout_s"] == pytest.approx(0.2)
        assert after["pid"] == before["pid"], "a user_config change must not restart replicas"

    def test_replica_killed_falls_back_then_recovers(self, deploy, url: str) -> None:
        deploy("faults")
        for replica_id in _replica_actor_names("faults", "RMBG2"):
            ray.kill(ray.get_actor(replica_id, namespace="serve"), no_restart=True)
        # The ingress learns within its poll interval that no replica is live.
        wait_for(lambda: health(url).json()["replicas"]["rmbg-2.0"] == 0, timeout_s=30)
        response = post_image(url, PHOTO)
        _assert_fallback(response, "no_live_replica")
        deploy("faults", fallback=False)
        if health(url).json()["replicas"]["rmbg-2.0"] == 0:
            _assert_503_naming(post_image(url, PHOTO), "no_live_replica")
        deploy("faults")
        # Serve replaces the killed replica; RMBG-2.0 serves again.
        wait_for(lambda: health(url).json()["status"] == "healthy", timeout_s=120)
        assert post_image(url, PHOTO).headers["x-model-used"] == "rmbg-2.0"


def _replica_actor_names(app: str, deployment: str) -> list[str]:
    from ray.util.state import list_actors

    prefix = f"SERVE_REPLICA::{app}#{deployment}#"
    actors = list_actors(filters=[("state", "=", "ALIVE")], limit=1000)
    names = [a.name for a in actors if a.name and a.name.startswith(prefix)]
    assert names, f"no live replica actor named {prefix}*"
    return names


class TestLoadFailure:
    MISSING = "/nonexistent/no-such-checkpoint"

    @pytest.fixture(scope="class")
    def url(self, deploy) -> str:
        return deploy("broken", rmbg_path=self.MISSING)

    def test_health_is_degraded_and_says_why(self, url: str) -> None:
        body = wait_for(lambda: _degraded(url), timeout_s=30)
        assert body["model_loaded"] is False
        assert body["fallback_reason"] == "load_failed:weights_not_found"
        status = body["models"]["rmbg-2.0"]["status"]
        assert status["error"]["code"] == "weights_not_found"
        assert "no-such-checkpoint" in status["error"]["message"]

    def test_request_falls_back(self, url: str) -> None:
        _assert_fallback(post_image(url, PHOTO), "load_failed:weights_not_found")

    def test_without_fallback_is_503_and_unhealthy(self, deploy, url: str) -> None:
        deploy("broken", rmbg_path=self.MISSING, fallback=False)
        _assert_503_naming(post_image(url, PHOTO), "load_failed:weights_not_found")
        response = health(url)
        assert response.status_code == 503
        assert response.json()["status"] == "unhealthy"


def _degraded(url: str) -> dict | None:
    body = health(url).json()
    return body if body["status"] == "degraded" else None


def test_u2net_mode_deploys_no_rmbg_and_claims_no_gpu(deploy) -> None:
    url = deploy("u2net-only", model="u2net")
    deployments = serve.status().applications["u2net-only"].deployments
    assert set(deployments) == {"Ingress", "U2Net"}
    body = health(url).json()
    assert body["status"] == "healthy"
    assert body["model_name"] == "u2net"
    assert body["replicas"]["rmbg-2.0"] == 0
    response = post_image(url, PHOTO)
    assert response.status_code == 200
    assert response.headers["x-model-used"] == "u2net"
    assert "x-fallback-reason" not in response.headers
    # Nothing in this app holds a GPU share.
    from ray.util.state import list_actors

    for actor in list_actors(filters=[("state", "=", "ALIVE")], limit=1000, detail=True):
        if actor.name and actor.name.startswith("SERVE_REPLICA::u2net-only#"):
            assert not actor.required_resources.get("GPU"), actor


def test_nothing_can_serve_is_unhealthy_503(deploy, tmp_path_factory) -> None:
    bad = write_u2net_shaped_onnx(tmp_path_factory.mktemp("bad") / "bad.onnx", bad_shape=True)
    url = deploy("dead", rmbg_path="/nonexistent", u2net_path=str(bad))
    response = wait_for(lambda: (r := health(url)).status_code == 503 and r, timeout_s=30)
    assert response.json()["status"] == "unhealthy"
    assert response.json()["fallback"]["error"]["code"] == "weights_invalid_model"
    error = post_image(url, PHOTO).json()["error"]
    assert error["code"] == "model_unavailable"
    assert "U2-Net cannot serve" in error["message"]
    serve.delete("dead")


def test_two_replicas_share_one_logical_gpu(deploy) -> None:
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
    responses = [post_image(url, PHOTO) for _ in range(4)]
    assert all(r.headers["x-model-used"] == "rmbg-2.0" for r in responses)
    serve.delete("gpu")
    arr = np.asarray(Image.open(io.BytesIO(responses[0].content)))
    assert arr.shape[2] == 4
