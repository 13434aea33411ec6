"""HTTP helpers for the service tests: polling, posting an image, reading health."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

#: The health fields the migration guide documents, public on every service: its contract,
#: written here as the guide states it (not read from the code under test).
GUIDE_HEALTH_FIELDS = (
    "status",
    "model_name",
    "model_loaded",
    "device",
    "gpu_available",
    "gpu_name",
    "styles_available",
)


def wait_for(predicate: Callable[[], Any], timeout_s: float = 60, interval_s: float = 0.25) -> Any:
    """Poll until `predicate` returns something truthy; fail with a clear message."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except (httpx.HTTPError, OSError) as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s} s (last: {last!r})")


def post_image(
    url: str,
    data: bytes,
    *,
    filename: str = "photo.jpg",
    timeout: float = 120,
    headers: dict[str, str] | None = None,
    background: bytes | None = None,
    **fields: str,
) -> httpx.Response:
    files = {"file": (filename, data, "application/octet-stream")}
    if background is not None:
        files["bg_image_file"] = ("background.jpg", background, "application/octet-stream")
    return httpx.post(
        f"{url}/api/v1/remove-background",
        files=files,
        data=fields,
        headers=headers,
        timeout=timeout,
    )


def health(url: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.get(f"{url}/api/v1/health", timeout=30, headers=headers)
