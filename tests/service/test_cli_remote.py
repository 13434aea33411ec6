"""`bgremove --url` against a real Serve app on the real u2netp: results written like the
in-process ones, the service's per-file errors (415, 422) in the summary, and a 503 with
Retry-After honoured on the way to the real service."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from bgremove.cli import main
from imaging.compose import subject_bbox
from tests.support.shared import IMAGES
from tests.support.stub_server import Reply, Request, error_reply, stub_server


@pytest.fixture
def photos(shared_data: None, tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("whisk.png", "horse.jpg"):
        shutil.copy(IMAGES / name, folder / name)
    (folder / "broken.jpg").write_bytes((IMAGES / "horse.jpg").read_bytes()[:3000])
    return folder


def _image(path: Path) -> Image.Image:
    image = Image.open(path)
    image.load()
    return image


def test_folder_through_the_service(
    u2netp_app: str, photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    argv = ["p", str(photos), str(out), "--url", u2netp_app, "--crop", "--crop-margin", "8px"]
    assert main(argv) == 1
    report = capsys.readouterr().out
    assert report.startswith("done: 2, skipped: 0, failed: 1")
    assert "models: u2net 2" in report
    assert "broken.jpg: [unsupported_image]" in report  # the service's 415, per file
    for name in ("whisk", "horse"):
        image = _image(out / f"{name}.png")
        assert image.mode == "RGBA"
        box = subject_bbox(np.asarray(image)[:, :, 3])
        assert box == (8, 8, image.size[0] - 8, image.size[1] - 8)
    # resumable as in-process: nothing is sent again
    (photos / "broken.jpg").unlink()
    assert main(argv) == 0
    assert capsys.readouterr().out.startswith("done: 0, skipped: 2, failed: 0")


def test_service_422_is_reported_per_file(
    u2netp_app: str, photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a preset this machine does not know may be the service's own: the service decides
    (photos / "broken.jpg").unlink()
    argv = ["p", str(photos), str(tmp_path / "out"), "--url", u2netp_app, "--preset", "house"]
    assert main(argv) == 1
    report = capsys.readouterr().out
    for name in ("horse.jpg", "whisk.png"):
        assert f"  {name}: [invalid_option] invalid preset 'house': allowed values are" in report
    assert not (tmp_path / "out").exists()


class _OverloadedOnce:
    """A proxy in front of the service that answers its first request 503 + Retry-After
    (as an overloaded service does) and forwards the others."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.times: list[float] = []

    def __call__(self, request: Request) -> Reply:
        self.times.append(time.monotonic())
        if len(self.times) == 1:
            return error_reply(503, "overloaded", "busy", {"Retry-After": "1"})
        answer = httpx.post(
            self.upstream + request.path,
            content=request.body,
            headers={"Content-Type": request.headers["Content-Type"]},
            timeout=120,
        )
        return Reply(
            answer.status_code,
            answer.content,
            answer.headers["content-type"],
            {"X-Model-Used": answer.headers.get("X-Model-Used", "")},
        )


@pytest.fixture
def overloaded_once(u2netp_app: str) -> Iterator[tuple[str, _OverloadedOnce]]:
    proxy = _OverloadedOnce(u2netp_app)
    with stub_server(proxy) as url:
        yield url, proxy


def test_retry_after_then_the_real_answer(
    overloaded_once: tuple[str, _OverloadedOnce], tmp_path: Path
) -> None:
    url, proxy = overloaded_once
    out = tmp_path / "whisk.png"
    argv = ["i", str(IMAGES / "whisk.png"), str(out), "--url", url]
    assert main(argv) == 0
    first, second = proxy.times
    assert second - first >= 0.95
    image = _image(out)
    assert image.mode == "RGBA" and image.size == (400, 300)
    alpha = np.asarray(image)[:, :, 3]
    assert (alpha < 16).mean() > 0.05 and (alpha > 128).mean() > 0.05
