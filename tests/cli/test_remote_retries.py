"""`--url`'s retry rules against a real HTTP server on 127.0.0.1 that answers as the service
does when overloaded (503 + Retry-After) or without a key (401); the client is the real one.

The service itself is exercised in tests/service/test_cli_remote.py; an overload on demand
is what it cannot give, hence this scripted server.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path

import pytest
from PIL import Image

from bgremove.cli import main
from bgremove.remote import MAX_RETRY_AFTER_S, backoff_s, retry_after_s
from tests.support.shared import IMAGES
from tests.support.stub_server import Reply, Request, error_reply, stub_server


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGBA", (8, 6), (0, 255, 0, 128)).save(out, "PNG")
    return out.getvalue()


class Script:
    """What the server answers, in order (the last answer repeats), and what it received."""

    def __init__(self, answers: list[tuple[int, dict[str, str]]]) -> None:
        self.answers = answers
        self.requests: list[tuple[float, dict[str, str], bytes]] = []
        self.lock = threading.Lock()

    def next(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str]]:
        with self.lock:
            self.requests.append((time.monotonic(), headers, body))
            index = min(len(self.requests), len(self.answers)) - 1
            return self.answers[index]

    def reply(self, request: Request) -> Reply:
        """The next scripted answer as the service would send it: a PNG, or its JSON error."""
        status, headers = self.next(request.headers, request.body)
        if status == 200:
            return Reply(status, _png(), "image/png", {"X-Model-Used": "u2net", **headers})
        code = {503: "overloaded", 401: "unauthorized"}.get(status, "error")
        return error_reply(status, code, f"said {status}", headers)


@pytest.fixture
def server() -> Iterator[tuple[str, Script]]:
    script = Script([(200, {})])
    with stub_server(script.reply) as url:
        yield url, script


def test_retry_after_parsing() -> None:
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert retry_after_s("2") == 2.0
    assert retry_after_s(format_datetime(now + timedelta(seconds=30), usegmt=True), now=now) == 30
    assert retry_after_s(format_datetime(now - timedelta(seconds=30), usegmt=True), now=now) == 0
    assert retry_after_s("100000") == MAX_RETRY_AFTER_S
    assert retry_after_s("soon") is None and retry_after_s(None) is None
    assert backoff_s(0, rng=lambda: 1.0) == 0.5 and backoff_s(20, rng=lambda: 1.0) == 30.0


@pytest.mark.usefixtures("shared_data")
def test_503_is_retried_after_retry_after(server: tuple[str, Script], tmp_path: Path) -> None:
    url, script = server
    script.answers = [(503, {"Retry-After": "1"}), (200, {})]
    out = tmp_path / "out.png"
    argv = ["i", str(IMAGES / "hockey.png"), str(out), "--url", url, "--api-key", "k1"]
    assert main([*argv, "--crop"]) == 0
    assert Image.open(out).size == (8, 6)
    (first, headers, body), (second, _, _) = script.requests
    assert second - first >= 0.95  # waited as asked
    assert headers["X-Api-Key"] == "k1"
    # the option fields travel as the API's form fields, the photo as `file`
    assert b'name="crop"' in body and b"true" in body and b'name="file"' in body


@pytest.mark.usefixtures("shared_data")
def test_overload_that_lasts_fails_the_file_not_the_run(
    server: tuple[str, Script], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, script = server
    script.answers = [(503, {"Retry-After": "0"})]
    photos = tmp_path / "in"
    photos.mkdir()
    (photos / "a.png").write_bytes((IMAGES / "hockey.png").read_bytes())
    assert main(["p", str(photos), str(tmp_path / "out"), "--url", url, "--retries", "2"]) == 1
    assert len(script.requests) == 3
    assert "a.png: [overloaded] said 503 (still 503 after 2 retries)" in capsys.readouterr().out


@pytest.mark.usefixtures("shared_data")
def test_refused_key_stops_the_run(
    server: tuple[str, Script],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, script = server
    script.answers = [(401, {})]
    monkeypatch.setenv("BG_REMOVAL_API_KEY", "from-env")
    photos = tmp_path / "in"
    photos.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        (photos / name).write_bytes((IMAGES / "hockey.png").read_bytes())
    argv = ["p", str(photos), str(tmp_path / "out"), "--url", url, "--jobs", "1"]
    assert main(argv) == 2
    assert "[unauthorized] the service refused the request: said 401" in capsys.readouterr().err
    assert len(script.requests) == 1  # the others were not sent
    assert script.requests[0][1]["X-Api-Key"] == "from-env"


@pytest.mark.usefixtures("shared_data")
def test_unreachable_service_stops_after_retries(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a port nobody listens on: bind, then close
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    argv = ["i", str(IMAGES / "hockey.png"), str(tmp_path / "o.png")]
    assert main([*argv, "--url", f"http://127.0.0.1:{port}", "--retries", "1"]) == 2
    assert "[unreachable] cannot reach the service" in capsys.readouterr().err
