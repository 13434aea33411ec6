"""Reliability through real HTTP: budgets, backpressure, self-healing, no lost requests, keys.

Each mechanism is driven to its edge on a real Serve app with the real u2netp.
"""

from __future__ import annotations

import io
import shutil
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image
from ray import serve

from tests.support.http import GUIDE_HEALTH_FIELDS, health, post_image, wait_for
from tests.support.replicas import kill_replica, replica_actor_names
from tests.support.shared import ROOT as SHARED
from tests.support.shared import U2NETP


def _encode(size: tuple[int, int], fmt: str = "JPEG") -> bytes:
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, fmt)
    return out.getvalue()


def _error(response: httpx.Response, status: int, code: str) -> dict[str, str]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code, error
    return error


def _batches(app: str) -> int:
    status = serve.get_deployment_handle("U2Net", app).status.remote().result()
    return sum(status["batches"].values())


@pytest.fixture(scope="module")
def tight(tight_app: str) -> str:
    return tight_app


class TestBudgets:
    def test_ratio_bomb_is_413_before_any_model_work(self, tight: str) -> None:
        before = _batches("tight")
        started = time.perf_counter()
        response = post_image(tight, _encode((1000, 100)), ratio="1:10")
        elapsed_ms = (time.perf_counter() - started) * 1000
        error = _error(response, 413, "output_too_large")
        assert "1000x10000" in error["message"] and "max_output_pixels" in error["message"]
        assert _batches("tight") == before, "the model ran for a request refused on its size"
        print(f"ratio bomb refused in {elapsed_ms:.0f} ms")

    def test_format_side_limit_is_413(self, u2netp_app: str) -> None:
        url = u2netp_app  # default budgets (20 MP in the tests): only the side limits apply
        error = _error(post_image(url, _encode((16384, 8)), format="webp"), 413, "output_too_large")
        assert "16383" in error["message"]
        ok = post_image(url, _encode((16383, 8)), format="webp")
        assert ok.status_code == 200, ok.text
        assert Image.open(io.BytesIO(ok.content)).size == (16383, 8)
        error = _error(
            post_image(url, _encode((65536, 4), "PNG"), filename="w.png"),
            413,
            "output_too_large",
        )
        assert "65535" in error["message"]

    def test_pixel_budget_overload_is_503_with_retry_after(self, tight: str) -> None:
        photo = _encode((1000, 1000))  # 1 MP in + 1 MP out: the whole budget of the replica
        with ThreadPoolExecutor(max_workers=8) as pool:
            responses = list(pool.map(lambda _: post_image(tight, photo), range(8)))
        statuses = sorted(r.status_code for r in responses)
        assert set(statuses) <= {200, 503}, statuses
        assert 200 in statuses and 503 in statuses, statuses
        for response in responses:
            if response.status_code == 503:
                _error(response, 503, "overloaded")
                assert int(response.headers["retry-after"]) >= 1

    def test_full_model_queue_is_503_with_retry_after(self, tight: str) -> None:
        photo = _encode((64, 64))
        with ThreadPoolExecutor(max_workers=16) as pool:
            responses = list(pool.map(lambda _: post_image(tight, photo), range(32)))
        statuses = [r.status_code for r in responses]
        assert set(statuses) <= {200, 503}, statuses
        assert 200 in statuses and 503 in statuses, statuses
        for response in responses:
            if response.status_code == 503:
                _error(response, 503, "overloaded")
                assert response.headers["retry-after"]

    @pytest.mark.parametrize("dialect", ["rembg", "removebg"])
    def test_a_dialect_under_overload_answers_with_retry_after(
        self, tight: str, dialect: str
    ) -> None:
        """A short burst through a dialect: every answer is the image or the overload answer
        a client of that API retries (rembg's clients: our 503; remove.bg's: its 429)."""
        photo = _encode((64, 64))

        def send(_: int) -> httpx.Response:
            if dialect == "rembg":
                files = {"file": ("photo.jpg", photo, "image/jpeg")}
                return httpx.post(f"{tight}/api/remove", files=files, timeout=120)
            files = {"image_file": ("photo.jpg", photo, "image/jpeg")}
            return httpx.post(f"{tight}/v1.0/removebg", files=files, timeout=120)

        with ThreadPoolExecutor(max_workers=16) as pool:
            responses = list(pool.map(send, range(32)))
        overload = 503 if dialect == "rembg" else 429
        statuses = [r.status_code for r in responses]
        assert set(statuses) <= {200, overload}, [r.text for r in responses if r.status_code >= 400]
        assert 200 in statuses and overload in statuses, statuses
        for response in responses:
            if response.status_code == 200:
                assert response.headers["x-model-used"] == "u2net"
                continue
            assert int(response.headers["retry-after"]) >= 1
            if dialect == "rembg":
                assert response.json()["error"]["code"] == "overloaded"
            else:
                assert response.json()["errors"][0]["code"] == "rate_limit_exceeded"
                assert response.headers["x-ratelimit-remaining"] == "0"


class TestBodyLimits:
    def test_chunked_upload_over_the_limit_is_413(self, tight: str) -> None:
        boundary = "b0undary"
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()

        def body(size: int) -> Iterator[bytes]:
            yield head
            for _ in range(size // 65536):
                yield b"\xff" * 65536
            yield f"\r\n--{boundary}--\r\n".encode()

        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        response = httpx.post(
            f"{tight}/api/v1/remove-background", content=body(8_000_000), headers=headers
        )
        assert "content-length" not in response.request.headers
        error = _error(response, 413, "image_too_large")
        assert "2000000" in error["message"]

    def test_chunked_upload_under_the_limit_is_served(self, tight: str) -> None:
        photo = _encode((200, 150))
        boundary = "b0undary"
        payload = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.jpg"\r\n'
                "Content-Type: image/jpeg\r\n\r\n"
            ).encode()
            + photo
            + f"\r\n--{boundary}--\r\n".encode()
        )
        for _ in range(3):
            response = httpx.post(
                f"{tight}/api/v1/remove-background",
                content=iter([payload[:1000], payload[1000:]]),
                headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
            )
            # The queue of one is shared with the health monitor's status calls: a 503 with
            # Retry-After is the documented "try again", not a failure of the body handling.
            if response.status_code != 503 or "retry-after" not in response.headers:
                break
            time.sleep(float(response.headers["retry-after"]))
        assert response.status_code == 200, response.text

    def test_second_file_and_unknown_fields_are_refused(self, tight: str) -> None:
        photo = _encode((64, 64))
        files = [("file", ("a.jpg", photo)), ("bg_image_file", ("b.jpg", photo))]
        response = httpx.post(
            f"{tight}/api/v1/remove-background", files=[*files, ("file", ("c.jpg", photo))]
        )
        _error(response, 400, "bad_request")  # a third file: the parser's own limit
        response = httpx.post(
            f"{tight}/api/v1/remove-background", files=[files[0], ("file", ("b.jpg", photo))]
        )
        assert "repeated ['file']" in _error(response, 422, "invalid_option")["message"]
        error = _error(post_image(tight, photo, colour="red"), 422, "invalid_option")
        assert "colour" in error["message"]


def test_failed_load_heals_without_a_redeploy(deploy, deployer, tmp_path_factory) -> None:
    """Weights that appear after a failed start are picked up by the retrying replica."""
    home = tmp_path_factory.mktemp("late-weights")
    url = deploy(
        "heal",
        model="u2net",
        u2net_home=str(home),
        load_retry_initial_s=0.5,
        load_retry_max_s=1.0,
    )
    try:
        body = wait_for(lambda: (r := health(url)).status_code == 503 and r.json())
        assert body["status"] == "unhealthy"
        group = body["models"]["u2net"]
        assert group["unavailable_reason"] == "load_failed:weights_not_found"
        assert group["status"]["state"] == "loading"
        pid = group["status"]["pid"]
        refused = post_image(url, _encode((64, 64)))
        _error(refused, 503, "model_unavailable")
        assert refused.headers["retry-after"]

        shutil.copy(U2NETP, home / "u2netp.onnx")
        body = wait_for(lambda: (b := health(url).json())["status"] == "healthy" and b, 60)
        status = body["models"]["u2net"]["status"]
        assert status["state"] == "ready" and status["load_attempts"] > 1
        assert status["pid"] == pid, "the replica healed itself; it was not replaced"
        assert post_image(url, _encode((64, 64))).status_code == 200
    finally:
        deployer.delete("heal")


def test_killed_replica_requests_are_answered(deploy, deployer) -> None:
    """Requests waiting in a replica that dies are retried on the other one: none is lost."""
    url = deploy(
        "kill",
        model="u2net",
        u2net_num_replicas=2,
        deployments={"U2Net": {"user_config": {"max_batch_size": 8, "batch_wait_timeout_s": 1.0}}},
    )
    try:
        wait_for(lambda: health(url).json()["models"]["u2net"]["ready_replicas"] == 2, 60)
        victim = replica_actor_names("kill", "U2Net")[0]
        photo = _encode((128, 128))
        killer = threading.Timer(0.5, kill_replica, args=(victim,))
        with ThreadPoolExecutor(max_workers=8) as pool:
            killer.start()
            responses = list(pool.map(lambda _: post_image(url, photo), range(8)))
        killer.join()
        assert victim not in replica_actor_names("kill", "U2Net")
        assert [r.status_code for r in responses] == [200] * 8, [r.text for r in responses]
    finally:
        deployer.delete("kill")


class TestAccess:
    """On the conftest's `keyed_app`: two keys, no details in public health, one origin."""

    @pytest.fixture
    def url(self, keyed_app: str) -> str:
        return keyed_app

    def test_requests_without_a_valid_key_are_401(self, url: str) -> None:
        photo = _encode((64, 64))
        response = post_image(url, photo)
        error = _error(response, 401, "unauthorized")
        assert "X-Api-Key" in error["message"]
        assert response.headers["www-authenticate"].startswith("Bearer")
        error = _error(post_image(url, photo, headers={"X-Api-Key": "nope"}), 401, "unauthorized")
        assert "not valid" in error["message"]
        _error(httpx.get(f"{url}/docs"), 401, "unauthorized")

    def test_either_header_carries_a_key(self, url: str, keyed_app_keys: tuple[str, str]) -> None:
        photo = _encode((64, 64))
        one, two = keyed_app_keys
        assert post_image(url, photo, headers={"X-Api-Key": one}).status_code == 200
        bearer = {"Authorization": f"Bearer {two}"}
        assert post_image(url, photo, headers=bearer).status_code == 200
        assert httpx.get(f"{url}/docs", headers=bearer).status_code == 200

    def test_public_health_is_the_guides_document_without_internals(
        self, url: str, keyed_app_key: str
    ) -> None:
        response = health(url)
        assert response.status_code == 200
        body = response.json()
        public = {*GUIDE_HEALTH_FIELDS, "formats_available", "models", "api_key_required"}
        assert set(body) == public
        assert (body["model_name"], body["model_loaded"], body["device"]) == ("u2net", True, "cpu")
        assert (body["gpu_available"], body["gpu_name"]) == (False, None)
        assert body["styles_available"] == ["minimal", "mood", "street"]
        assert body["api_key_required"] is True  # the web page asks for a key
        u2net = body["models"]["u2net"]
        assert set(u2net) == {"available", "ready_replicas", "precision", "int8"}
        assert set(u2net["int8"]) == {"state", "reason", "guard"}  # issue 21: public
        for secret in ("pid", "replica_id", "weights", str(SHARED)):
            assert secret not in response.text
        detailed = health(url, headers={"X-Api-Key": keyed_app_key}).json()
        assert detailed["models"]["u2net"]["status"]["pid"]
        assert detailed["fallback"]["weights"]

    def test_cors_allows_the_configured_origin_only(
        self, url: str, keyed_app_key: str, keyed_app_origin: str
    ) -> None:
        preflight = {"Access-Control-Request-Method": "POST"}
        allowed = httpx.options(
            f"{url}/api/v1/remove-background", headers={"Origin": keyed_app_origin, **preflight}
        )
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == keyed_app_origin
        other = httpx.options(
            f"{url}/api/v1/remove-background",
            headers={"Origin": "https://evil.example", **preflight},
        )
        assert "access-control-allow-origin" not in other.headers
        response = post_image(
            url, _encode((64, 64)), headers={"Origin": keyed_app_origin, "X-Api-Key": keyed_app_key}
        )
        assert "X-Model-Used" in response.headers["access-control-expose-headers"]
