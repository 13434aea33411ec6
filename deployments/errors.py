"""Errors the API can return, and the one place where exceptions become HTTP responses.

Every error body has the same shape, `{"error": {"code": ..., "message": ...}}`,
so clients can switch on `code` and show `message` to a person; under another API's paths
(a dialect: `deployments.dialects`) that API's shape instead (`error_response`).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

from deployments.dialects import removebg
from imaging.errors import (
    ImageError,
    ImageTooLargeError,
    InvalidOptionError,
    UnsupportedImageError,
)

logger = logging.getLogger("ray.serve")


class ServiceError(Exception):
    """An error raised by the service itself, with its HTTP status and code."""

    status_code: int = 500
    code: str = "internal_error"

    def __init__(
        self, message: str, *, code: str | None = None, retry_after_s: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        #: set where trying again soon may work (overload, replicas restarting): Retry-After
        self.retry_after_s = retry_after_s
        if code is not None:
            self.code = code


class NoModelAvailableError(ServiceError):
    """No model group can produce a mask right now (503)."""

    status_code = 503
    code = "model_unavailable"


class OverloadedError(ServiceError):
    """Too much work in flight: retry after `retry_after_s` (503 with Retry-After)."""

    status_code = 503
    code = "overloaded"


class UnauthorizedError(ServiceError):
    """No valid API key (401)."""

    status_code = 401
    code = "unauthorized"


class MaskTimeoutError(ServiceError):
    """The model that was asked last did not answer in time (504)."""

    status_code = 504
    code = "timeout"


#: Status codes of the image errors; the imaging package knows nothing of HTTP.
_IMAGE_STATUS: dict[type[ImageError], int] = {
    ImageTooLargeError: 413,
    UnsupportedImageError: 415,
    InvalidOptionError: 422,
}


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}


def error_response(
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    *,
    scope: Scope | None = None,
) -> JSONResponse:
    """The error in the shape of the API the request (``scope``) came through: remove.bg's
    under its paths (`deployments.dialects.removebg`: its shape and status codes), ours
    everywhere else."""
    if scope is not None and removebg.owns(scope):
        return removebg.error_response(status, code, message, headers)
    return JSONResponse(status_code=status, content=error_body(code, message), headers=headers)


def service_error_response(exc: ServiceError, scope: Scope | None = None) -> JSONResponse:
    """The JSON response of a ServiceError, with its Retry-After or WWW-Authenticate header."""
    headers: dict[str, str] = {}
    if exc.retry_after_s is not None:
        headers["Retry-After"] = str(exc.retry_after_s)
    if isinstance(exc, UnauthorizedError):
        headers["WWW-Authenticate"] = 'Bearer realm="bg-removal"'
    return error_response(exc.status_code, exc.code, exc.message, headers or None, scope=scope)


def install_error_handlers(app: FastAPI) -> None:
    """Map every exception type the API can raise to its JSON response."""

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return service_error_response(exc, request.scope)

    @app.exception_handler(ImageError)
    async def _image_error(request: Request, exc: ImageError) -> JSONResponse:
        status = next((code for cls, code in _IMAGE_STATUS.items() if isinstance(exc, cls)), 400)
        return error_response(status, exc.code, str(exc), scope=request.scope)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg', '')}"
            for err in exc.errors()
        )
        return error_response(
            422, "invalid_request", problems or "invalid request", scope=request.scope
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}.get(
            exc.status_code, "http_error"
        )
        return error_response(exc.status_code, code, str(exc.detail), scope=request.scope)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s", request.url.path)
        message = "internal error; see the service logs"
        return error_response(500, "internal_error", message, scope=request.scope)
