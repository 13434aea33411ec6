"""The ASGI layer in front of every route: CORS, API keys, and the request body limit.

It runs before FastAPI parses anything, so an unauthenticated or oversized request
costs no multipart parsing and no disk spooling. The body limit is enforced while
the body streams (with or without Content-Length). Settings come from the
ingress replica (they are per app), looked up once per replica.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware

from deployments.dialects import removebg
from deployments.errors import UnauthorizedError, error_response, service_error_response
from imaging.errors import ImageTooLargeError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Multipart framing and the small form fields on top of the file itself.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
#: Paths (after the app's route prefix) answered without a key: liveness/readiness, and the
#: web page (static HTML; it carries no data, and the key is typed into it).
PUBLIC_PATHS = frozenset({"/", "/api/v1/health"})
EXPOSED_HEADERS = [
    *("X-Model-Used", "X-Fallback-Reason", "X-Processing-Time-Ms", "Retry-After"),
    *removebg.ANSWER_HEADERS,  # for remove.bg's browser clients
]


class BodyTooLargeError(ImageTooLargeError):
    """The request body grew past the upload limit while it streamed in (413)."""


def presented_key(headers: Headers) -> str | None:
    """The API key of a request: `X-Api-Key`, or `Authorization: Bearer <key>`."""
    key = headers.get("x-api-key")
    if key:
        return key.strip()
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def key_is_valid(key: str | None, key_hashes: frozenset[str]) -> bool:
    """Constant-time check of a key against the configured keys' SHA-256 hashes."""
    if not key:
        return False
    digest = hashlib.sha256(key.encode()).hexdigest()
    return any(hmac.compare_digest(digest, known) for known in key_hashes)


class RequestGuard:
    """ASGI middleware; `config_of()` returns the replica's IngressConfig."""

    def __init__(self, app: ASGIApp, config_of: Callable[[], Any]) -> None:
        self.app = app
        self._config_of = config_of
        self._cors: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        config = self._config_of()
        if config.cors_allow_origins:
            if self._cors is None:
                self._cors = CORSMiddleware(
                    self._guarded,
                    allow_origins=list(config.cors_allow_origins),
                    allow_methods=["GET", "POST"],
                    allow_headers=["Authorization", "X-Api-Key", "X-Request-Id"],
                    expose_headers=[*EXPOSED_HEADERS, "X-Request-Id"],
                )
            await self._cors(scope, receive, send)
            return
        await self._guarded(scope, receive, send)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        config = self._config_of()
        headers = Headers(scope=scope)
        key = presented_key(headers)
        needs_key = bool(config.api_key_hashes) and _app_path(scope) not in PUBLIC_PATHS
        if needs_key and not key_is_valid(key, config.api_key_hashes):
            message = (
                "an API key is required: send it as X-Api-Key or Authorization: Bearer"
                if key is None
                else "the API key is not valid"
            )
            await service_error_response(UnauthorizedError(message), scope)(scope, receive, send)
            return
        body = config.max_upload_bytes
        if removebg.owns(scope):  # base64 in JSON and urlencoded bodies: 4/3 and more
            body = removebg.body_limit(config.max_upload_bytes)
        limit = body + MULTIPART_OVERHEAD_BYTES
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            too_large = f"request body is {declared} bytes"
            await _too_large(config.max_upload_bytes, too_large, scope)(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLargeError(
                        f"request body is over {received} bytes; uploads are limited to "
                        f"{config.max_upload_bytes} bytes"
                    )
            return message

        await self.app(scope, limited_receive, send)


def _app_path(scope: Scope) -> str:
    """The path below the app's route prefix (Serve mounts apps under `root_path`)."""
    path, root = scope.get("path", ""), scope.get("root_path", "")
    if not (root and path.startswith(root)):
        return path
    # `/prefix` itself is the app's root, as `/prefix/` is (the router redirects it there)
    return path[len(root) :] or "/"


def _too_large(limit: int, what: str, scope: Scope) -> ASGIApp:
    message = f"{what}; uploads are limited to {limit} bytes"
    return error_response(413, ImageTooLargeError.code, message, scope=scope)
