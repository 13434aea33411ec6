"""The HTTP API: validate, decode, ask a model group for the mask, compose, encode.

Decoding and encoding happen here, not in the model replicas, so that they
scale with the ingress and the replicas only do model work. CPU-bound steps run
in worker threads (Pillow and numpy release the GIL) to keep the event loop free.
"""

# No `from __future__ import annotations` here: Serve pickles the routes by value, and
# FastAPI must see real annotation objects (File, Form, Request), not unresolvable strings.

import asyncio
import contextlib
import ctypes
import ctypes.util
import functools
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from ray import serve
from ray.serve.handle import DeploymentHandle
from ray.serve.metrics import Counter, Histogram
from starlette.datastructures import UploadFile

from deployments.admission import DeadlineAdmission, PixelBudget, Reservation
from deployments.dialects import rembg as rembg_dialect
from deployments.dialects import removebg as removebg_dialect
from deployments.errors import OverloadedError, install_error_handlers
from deployments.group_monitor import GroupMonitor, status_handles
from deployments.guard import RequestGuard, key_is_valid, presented_key
from deployments.health import health_report
from deployments.routing import MaskRouter, RoutingConfig
from deployments.url_fetch import FetchConfig, fetch_image
from deployments.webpage import web_page_response
from imaging.errors import ImageTooLargeError, InvalidOptionError
from imaging.foreground import warmup as warm_up_edges
from imaging.options import OPTION_FIELDS, OPTION_NAMES, RenderOptions
from imaging.pipeline import Limits, Result, remove_background_async

logger = logging.getLogger("ray.serve")

API_PREFIX = "/api/v1"

api = FastAPI(
    title="Background removal",
    version="0.1.0",
    description="Cut-outs with RMBG-2.0 (BiRefNet), U2-Net as the fallback.",
)
install_error_handlers(api)

#: The form: the photo, an optional background image and short option fields; no more.
PHOTO_FIELD = "file"
BACKGROUND_FIELD = "bg_image_file"
MAX_FORM_FILES = 2
MAX_FORM_FIELDS = 16
MAX_FIELD_BYTES = 1024
FORM_FIELDS = OPTION_NAMES | {PHOTO_FIELD, BACKGROUND_FIELD}


@dataclass(frozen=True)
class IngressConfig:
    """Limits and access settings, fixed at start (a change restarts the ingress replicas)."""

    max_upload_bytes: int
    max_pixels: int
    max_output_pixels: int = 50_000_000
    pixel_budget: int = 100_000_000
    retry_after_s: int = 2
    status_poll_interval_s: float = 2.0
    status_poll_idle_after_s: float = 60.0
    #: SHA-256 of each API key; empty: no authentication
    api_key_hashes: frozenset[str] = frozenset()
    health_details: bool = False
    cors_allow_origins: tuple[str, ...] = ()
    #: preset name -> option fields (`imaging.presets`)
    presets: dict[str, dict[str, str]] = field(default_factory=dict)
    #: the .env file the settings were read from ("": none), shown in detailed health
    settings_file: str = ""
    #: what image URLs may be fetched (`deployments.url_fetch`); off by default
    url_fetch: FetchConfig = field(default_factory=FetchConfig)

    @property
    def limits(self) -> Limits:
        return Limits(self.max_upload_bytes, self.max_pixels, self.max_output_pixels)


#: glibc's mallopt parameters (malloc.h) and the ingress's values. The ingress decodes,
#: composes and encodes in worker threads (`asyncio.to_thread`). Under glibc's defaults (up to
#: 8 arenas per core; the mmap threshold rising to the largest buffer freed, up to 32 MiB, so
#: image buffers then come from arenas that keep them when freed) the ingress's path kept
#: 440 MiB freed but not returned, RSS about 1000 MiB (peak 1099), and a burst of large images
#: raises it for good: the 30-minute soak's step (docs/cluster.md, "Soak"). With 2 arenas and
#: buffers of 1 MiB and more always mmapped (returned to the system when freed): 20-49 MiB
#: kept, RSS 550-700 MiB (peak 765) at the same request rate (benchmarks/ingress_memory.py).
#: Set with mallopt when the replica starts, not MALLOC_* variables: a config file's
#: `ray_actor_options` for the Ingress would replace a runtime_env set here.
M_MMAP_THRESHOLD, M_ARENA_MAX = -3, -8
INGRESS_MALLOPT = {M_ARENA_MAX: 2, M_MMAP_THRESHOLD: 1024 * 1024}


def tune_malloc(params: dict[int, int] | None = None) -> bool:
    """Apply `INGRESS_MALLOPT` (or ``params``) to this process's glibc malloc; False where
    the C library has no mallopt or refuses a value (not glibc: nothing to tune)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return all(mallopt(k, v) == 1 for k, v in (params or INGRESS_MALLOPT).items())


def _replica_config() -> IngressConfig:
    """The settings of the ingress replica serving this request (settings are per app)."""
    return serve.get_replica_context().servable_object.config


api.add_middleware(RequestGuard, config_of=_replica_config)


def _form_schema() -> dict[str, Any]:
    """OpenAPI description of the multipart form (which the route parses itself, with limits),
    built from the one list of options every entry point shares."""
    properties: dict[str, Any] = {
        PHOTO_FIELD: {
            "type": "string",
            "format": "binary",
            "description": "The photo: JPEG, PNG, WebP, BMP or TIFF.",
        },
        BACKGROUND_FIELD: {
            "type": "string",
            "format": "binary",
            "description": "A background photo, scaled to cover the canvas behind the subject.",
        },
    }
    for option in OPTION_FIELDS:
        prop: dict[str, Any] = {"type": "string", "description": option.help}
        if option.choices:
            prop["enum"] = list(option.choices)
        if option.example:
            prop["example"] = option.example
        properties[option.name] = prop
    schema = {"type": "object", "required": [PHOTO_FIELD], "properties": properties}
    return {"required": True, "content": {"multipart/form-data": {"schema": schema}}}


# Note: `serve.ingress` snapshots the FastAPI app when the class is decorated, so
# every function the routes use must be defined above this point.
@serve.deployment(name="Ingress", max_ongoing_requests=32)
@serve.ingress(api)
class Ingress:
    """FastAPI ingress; routes mask requests to the model groups."""

    def __init__(self, groups: dict[str, DeploymentHandle], config: IngressConfig) -> None:
        """``groups``: each model tier's replica group, by tier name (`models.registry`)."""
        self.config = config
        if not tune_malloc():
            logger.info("malloc left at its defaults (no glibc mallopt)")
        warm_up_edges()  # compiled edge refinement (cached on disk after the first process)
        self._budget = PixelBudget(config.pixel_budget, config.retry_after_s)
        # Whole requests (decode, masks, compose, encode) share this replica's CPUs: past
        # what it can answer in time, a request is refused at the door, before its body.
        self._door = DeadlineAdmission()
        self._monitor = GroupMonitor(
            status_handles(groups), config.status_poll_interval_s, config.status_poll_idle_after_s
        )
        self._router = MaskRouter(groups, self._monitor, config.retry_after_s)
        self._requests = Counter(
            "bg_removal_requests",
            description="Finished remove-background requests by model, status and API dialect.",
            tag_keys=("model", "status", "dialect"),
        )
        self._latency = Histogram(
            "bg_removal_request_latency_ms",
            description="End-to-end time in the ingress, ms.",
            boundaries=[25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000],
            tag_keys=("model", "dialect"),
        )

    def reconfigure(self, config: dict[str, Any]) -> None:
        """Rollout settings: primary model, fallback on/off, per-group timeouts."""
        self._router.config = RoutingConfig.from_user_config(config)
        logger.info("routing reconfigured: %s", self._router.config)

    @api.post(
        f"{API_PREFIX}/remove-background",
        openapi_extra={"requestBody": _form_schema()},
        response_class=Response,
    )
    async def remove_background(self, request: Request) -> Response:
        """Cut the subject out of the photo, optionally composed on a styled canvas."""
        async with self.admitted() as started:
            photo, background, fields = await self._read_form(request)
            options = RenderOptions.parse(
                fields, presets=self.config.presets, bg_image=background is not None
            )
            result = await self.render(
                photo, options, background, dialect="native", started=started
            )
            return Response(
                content=result.body,
                media_type=result.media_type,
                headers=self.result_headers(result, started),
            )

    @api.post(
        removebg_dialect.REMOVE_PATH,
        openapi_extra={"requestBody": removebg_dialect.openapi_body()},
        response_class=Response,
    )
    async def removebg_remove(self, request: Request) -> Response:
        """remove.bg's `POST /v1.0/removebg` (`deployments.dialects.removebg`): its fields
        and answers; our limits, admission, pipeline and fallback."""
        async with self.admitted() as started:
            call = await removebg_dialect.read_call(
                request, max_bytes=self.config.max_upload_bytes, read_upload=self._read_upload
            )
            photo = call.image
            if call.image_url is not None:
                photo = await self.fetch_url(call.image_url)
            background = call.background
            if call.background_url is not None:
                background = await self.fetch_url(call.background_url)
            assert photo is not None  # read_call checked that exactly one image came
            result = await self.render(
                photo, call.options, background, dialect="removebg", started=started
            )
            return await removebg_dialect.answer(result, call, self.result_headers(result, started))

    @api.get(removebg_dialect.ACCOUNT_PATH)
    async def removebg_account(self) -> JSONResponse:
        """remove.bg's `GET /v1.0/account`: nothing is metered here, so no credits are
        counted (behind the API key where keys are on, as every non-public path)."""
        return JSONResponse(removebg_dialect.ACCOUNT)

    @contextlib.asynccontextmanager
    async def admitted(self) -> AsyncIterator[float]:
        """Admission at the door, before the body is read: a request this replica could not
        answer within the primary's share now is refused with 503 + Retry-After. Yields the
        start time (`time.perf_counter`). Every dialect's route runs inside this."""
        self._monitor.start()
        started = time.perf_counter()
        routing = self._router.config
        budget_s = routing.timeout_s(routing.model)
        if not self._door.admit(budget_s, time.monotonic()):
            raise OverloadedError(
                f"this replica cannot answer another request within {budget_s:g} s now: "
                f"retry after {self.config.retry_after_s} s",
                retry_after_s=self.config.retry_after_s,
            )
        token = self._door.started(time.monotonic())
        served = False
        try:
            yield started
            served = True
        finally:
            self._door.finished(token, time.monotonic(), served=served)

    async def render(
        self,
        photo: bytes,
        options: RenderOptions,
        background: bytes | None,
        *,
        dialect: str,
        started: float,
        model: str | None = None,
    ) -> Result:
        """The pipeline under this replica's pixel budget, with the model groups as the
        masker; counted and logged by ``dialect`` (the API the request came through) with
        the time since ``started`` (when `admitted` let the request in). ``model``: the tier
        the request asks for first (None: the configured primary); the fallback is the same."""
        masker = functools.partial(self._router.mask, model=model)
        reservation = Reservation(self._budget)
        try:
            result = await remove_background_async(
                photo,
                options,
                masker,
                limits=self.config.limits,
                background=background,
                reserve=reservation.acquire,
            )
        finally:
            reservation.release()
        elapsed_ms = (time.perf_counter() - started) * 1000
        self._requests.inc(tags={"model": result.model, "status": "200", "dialect": dialect})
        self._latency.observe(elapsed_ms, tags={"model": result.model, "dialect": dialect})
        logger.info(
            "%s: served %dx%d %s -> %dx%d %s with %s%s in %.0f ms %s",
            dialect,
            *result.input_size,
            result.input_format,
            *result.output_size,
            result.media_type,
            result.model,
            f" (fallback: {result.fallback_reason})" if result.fallback_reason else "",
            elapsed_ms,
            {k: round(v, 1) for k, v in result.timings_ms.items()},
        )
        return result

    async def fetch_url(self, url: str) -> bytes:
        """An image by URL, under the operator's URL policy and the upload's byte limit
        (`deployments.url_fetch`: refusals are 4xx `ImageError`s naming the reason)."""
        return await fetch_image(url, self.config.url_fetch)

    @staticmethod
    def result_headers(result: Result, started: float) -> dict[str, str]:
        """The headers every dialect's image answer carries: which model made the mask, why
        it was the fallback, and the time since the request was admitted."""
        headers = {
            "X-Model-Used": result.model,
            "X-Processing-Time-Ms": f"{(time.perf_counter() - started) * 1000:.1f}",
        }
        if result.fallback_reason:
            headers["X-Fallback-Reason"] = result.fallback_reason
        return headers

    async def _read_form(self, request: Request) -> tuple[bytes, bytes | None, dict[str, str]]:
        """The photo's bytes, the background image's (if sent) and the option fields, under
        strict multipart limits."""
        async with request.form(
            max_files=MAX_FORM_FILES, max_fields=MAX_FORM_FIELDS, max_part_size=MAX_FIELD_BYTES
        ) as form:
            unknown = sorted(set(form.keys()) - FORM_FIELDS)
            if unknown:
                raise InvalidOptionError(
                    f"unknown form field(s) {', '.join(unknown)}; "
                    f"allowed: {', '.join(sorted(FORM_FIELDS))}"
                )
            repeated = sorted(k for k in set(form.keys()) if len(form.getlist(k)) > 1)
            if repeated:
                raise InvalidOptionError(f"send each form field once: repeated {repeated}")
            upload = form.get(PHOTO_FIELD)
            if not isinstance(upload, UploadFile):
                raise InvalidOptionError(
                    f"missing the image: send it as the form field '{PHOTO_FIELD}'"
                )
            fields = {k: v for k, v in form.items() if isinstance(v, str)}
            photo = await self._read_upload(upload)
            extra = form.get(BACKGROUND_FIELD)
            if extra is not None and not isinstance(extra, UploadFile):
                raise InvalidOptionError(f"'{BACKGROUND_FIELD}' must be a file upload")
            background = await self._read_upload(extra) if extra is not None else None
        return photo, background, fields

    async def _read_upload(self, upload: UploadFile) -> bytes:
        limit = self.config.max_upload_bytes
        data = await upload.read(limit + 1)
        if len(data) > limit:
            raise ImageTooLargeError(f"upload is over the limit of {limit} bytes")
        return data

    @api.get(
        rembg_dialect.PATH,
        openapi_extra={"parameters": rembg_dialect.openapi_parameters(get=True)},
        response_class=Response,
        tags=["rembg"],
    )
    async def rembg_remove_url(self, request: Request) -> Response:
        """rembg's `GET /api/remove?url=...`: the image fetched under the url_fetch policy."""
        async with self.admitted() as started:
            url, parsed = rembg_dialect.read_get(request)
            photo = await self.fetch_url(url)
            return await self._rembg_answer(photo, parsed, started)

    @api.post(
        rembg_dialect.PATH,
        openapi_extra={
            "parameters": rembg_dialect.openapi_parameters(get=False),
            "requestBody": rembg_dialect.openapi_request_body(),
        },
        response_class=Response,
        tags=["rembg"],
    )
    async def rembg_remove_file(self, request: Request) -> Response:
        """rembg's `POST /api/remove` with the multipart `file`, under the native form's
        limits."""
        async with self.admitted() as started:
            photo, parsed = await rembg_dialect.read_post(
                request, self._read_upload, max_part_size=MAX_FIELD_BYTES
            )
            return await self._rembg_answer(photo, parsed, started)

    async def _rembg_answer(
        self, photo: bytes, parsed: rembg_dialect.RembgRequest, started: float
    ) -> Response:
        result = await self.render(
            photo, parsed.options, None, dialect="rembg", started=started, model=parsed.model
        )
        return Response(
            content=result.body,
            media_type=result.media_type,
            headers=self.result_headers(result, started),
        )

    @api.get("/", include_in_schema=False)
    async def index(self) -> Response:
        """The web page (HTML with a strict CSP); public, it carries no data."""
        return web_page_response()

    @api.get(f"{API_PREFIX}/health")
    async def health(self, request: Request) -> JSONResponse:
        """Readiness of each model group; 503 when no group can serve.

        Anyone gets the guide's fields (status, model_name, model_loaded, device,
        gpu_available, gpu_name, styles_available) and each model's availability; replica
        details (pids, paths, errors) need an API key, or `health_details`.
        """
        self._monitor.start()
        try:
            await asyncio.wait_for(self._monitor.refresh(), timeout=10)
        except Exception as exc:
            logger.warning("health refresh failed: %r", exc)
        details = self.config.health_details or (
            bool(self.config.api_key_hashes)
            and key_is_valid(presented_key(request.headers), self.config.api_key_hashes)
        )
        report = health_report(self._router.config, self._monitor, details=details)
        # The web page asks for a key only when one is needed.
        report["api_key_required"] = bool(self.config.api_key_hashes)
        if details:
            report["presets_available"] = sorted(self.config.presets)
            report["settings_file"] = self.config.settings_file or None
        return JSONResponse(report, status_code=503 if report["status"] == "unhealthy" else 200)
