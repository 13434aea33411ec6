"""Sending the work to a running service: POST /api/v1/remove-background, with retries.

The service answers 503 (overloaded, replicas restarting) and 429 with a Retry-After when
trying again soon may work: those are retried after the delay it asks for (or a capped
exponential backoff when it gives none), as is a connection that fails. Other errors are the
input's (`FileError`, with the service's code and message), except those that would fail
every input (no or a refused API key, no such endpoint), which stop the run (`SetupError`).
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

import httpx

from bgremove.errors import FileError, SetupError
from bgremove.remover import Outcome

log = logging.getLogger(__name__)

#: the service's route and form field names (deployments/ingress.py; not imported: that
#: module needs Ray, and a client must not)
ENDPOINT = "/api/v1/remove-background"
PHOTO_FIELD = "file"
BACKGROUND_FIELD = "bg_image_file"
#: answers that say "the same request may work later"
RETRY_STATUSES = frozenset({429, 503})
#: longest wait honoured from one Retry-After, and the backoff's first step and cap
MAX_RETRY_AFTER_S = 120.0
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0


def retry_after_s(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds a Retry-After header asks to wait (delta-seconds or an HTTP date), capped."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return min(float(text), MAX_RETRY_AFTER_S)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    wait = (when - (now or datetime.now(timezone.utc))).total_seconds()
    return min(max(wait, 0.0), MAX_RETRY_AFTER_S)


def backoff_s(attempt: int, rng: Callable[[], float] = random.random) -> float:
    """Exponential backoff with jitter (0.5, 1, 2, ... s, up to 30 s, times 0.5-1.0)."""
    return min(BACKOFF_FIRST_S * 2**attempt, BACKOFF_MAX_S) * (0.5 + 0.5 * rng())


def _error_of(response: httpx.Response) -> tuple[str, str]:
    """(code, message) of an error answer: the API's JSON body, else the status and text."""
    try:
        error = response.json()["error"]
        return str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        text = response.text.strip().replace("\n", " ")[:200]
        return f"http_{response.status_code}", text or response.reason_phrase


@dataclass
class RemoteRemover:
    """`Remover` that posts each image to the service at ``url`` (thread-safe: one
    connection pool shared by the worker threads)."""

    url: str
    fields: dict[str, str]
    api_key: str | None = None
    background: bytes | None = None
    retries: int = 5
    timeout_s: float = 120.0
    sleep: Callable[[float], None] = time.sleep
    _client: httpx.Client = field(init=False, repr=False)

    def __post_init__(self) -> None:
        headers = {"X-Api-Key": self.api_key} if self.api_key else {}
        self._client = httpx.Client(
            base_url=self.url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(self.timeout_s, connect=10.0),
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> RemoteRemover:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __call__(self, data: bytes, name: str) -> Outcome:
        files = {PHOTO_FIELD: (name, data, "application/octet-stream")}
        if self.background is not None:
            files[BACKGROUND_FIELD] = ("background", self.background, "application/octet-stream")
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = self._client.post(ENDPOINT, files=files, data=self.fields)
            except httpx.TransportError as exc:
                if last:
                    raise SetupError(
                        f"cannot reach the service at {self.url} ({type(exc).__name__}: {exc}) "
                        f"after {self.retries} retries",
                        code="unreachable",
                    ) from exc
                wait = backoff_s(attempt)
                log.warning("%s: %s; retrying in %.1f s", self.url, exc, wait)
            else:
                if response.status_code not in RETRY_STATUSES or last:
                    return self._outcome(response)
                wait = retry_after_s(response.headers.get("Retry-After"))
                if wait is None:
                    wait = backoff_s(attempt)
                log.info("%s answered %d; retrying in %.1f s", name, response.status_code, wait)
            self.sleep(wait)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _outcome(self, response: httpx.Response) -> Outcome:
        status = response.status_code
        if status == 200:
            return Outcome(
                body=response.content,
                media_type=response.headers.get("content-type", "").split(";")[0].strip(),
                model=response.headers.get("X-Model-Used", "unknown"),
                fallback_reason=response.headers.get("X-Fallback-Reason"),
            )
        code, message = _error_of(response)
        if status in (401, 403):
            hint = "" if self.api_key else " (pass --api-key or set BG_REMOVAL_API_KEY)"
            raise SetupError(f"the service refused the request: {message}{hint}", code=code)
        if status in (404, 405):
            raise SetupError(
                f"{self.url} has no {ENDPOINT} ({status}): is it the service's base URL?",
                code="not_found",
            )
        if status in RETRY_STATUSES:
            message += f" (still {status} after {self.retries} retries)"
        raise FileError(message, code=code, status=status)
