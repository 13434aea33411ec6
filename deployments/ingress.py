"""The HTTP API: validate, decode, ask a model group for the mask, compose, encode.

Decoding and encoding happen here, not in the model replicas, so that they
scale with the ingress and the replicas only do model work. CPU-bound steps run
in worker threads (Pillow and numpy release the GIL) to keep the event loop free.
"""

# No `from __future__ import annotations` here: Serve pickles the routes by value, and
# FastAPI must see real annotation objects (File, Form, Request), not unresolvable strings.

import asyncio
import logging
import time
from dataclasses import asdict, dataclass
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from ray import serve
from ray.serve.handle import DeploymentHandle
from ray.serve.metrics import Counter, Histogram

from deployments.errors import error_body, install_error_handlers
from deployments.routing import (
    RMBG,
    U2NET,
    GroupMonitor,
    GroupState,
    MaskResult,
    MaskRouter,
    RoutingConfig,
)
from imaging.compose import compose_styled, cutout, fit_to_ratio
from imaging.decode import DecodedImage, decode_image
from imaging.encode import encode_image
from imaging.errors import ImageTooLargeError, InvalidOptionError
from imaging.options import OutputFormat, Style, parse_format, parse_ratio, parse_style

logger = logging.getLogger("ray.serve")

API_PREFIX = "/api/v1"

api = FastAPI(
    title="Background removal",
    version="0.1.0",
    description="Cut-outs with RMBG-2.0 (BiRefNet), U2-Net as the fallback.",
)
install_error_handlers(api)

#: Multipart framing and the small form fields on top of the file itself.
MULTIPART_OVERHEAD_BYTES = 64 * 1024


@api.middleware("http")
async def refuse_oversized_bodies(request: Request, call_next: Any) -> Response:
    """Refuse by Content-Length before the multipart body is read and spooled.

    The limit lives on the replica's Ingress instance (settings are per app).
    Bodies without a Content-Length are still checked after parsing.
    """
    ingress = serve.get_replica_context().servable_object
    limit = ingress.max_upload_bytes + MULTIPART_OVERHEAD_BYTES
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return JSONResponse(
            status_code=413,
            content=error_body(
                ImageTooLargeError.code,
                f"request body is {declared} bytes; uploads are limited to "
                f"{ingress.max_upload_bytes} bytes",
            ),
        )
    return await call_next(request)


@dataclass(frozen=True)
class IngressLimits:
    """Input limits, fixed at start (changing them restarts the ingress replicas)."""

    max_upload_bytes: int
    max_pixels: int
    status_poll_interval_s: float = 2.0


@dataclass(frozen=True)
class RenderOptions:
    """The validated request options."""

    ratio: tuple[int, int] | None
    style: Style | None
    fmt: OutputFormat

    @classmethod
    def parse(cls, ratio: str | None, style: str | None, fmt: str | None) -> "RenderOptions":
        options = cls(parse_ratio(ratio), parse_style(style), parse_format(fmt))
        if options.fmt is OutputFormat.JPEG and options.style is None:
            raise InvalidOptionError(
                "format 'jpeg' has no transparency: use it with a style "
                f"({', '.join(s.value for s in Style)}), or ask for 'png' or 'webp'"
            )
        return options


def render(decoded: DecodedImage, mask: np.ndarray, options: RenderOptions) -> tuple[bytes, str]:
    """Compose the mask with the image as asked, then encode."""
    if options.style is None:
        pixels = cutout(decoded.rgb, mask, input_alpha=decoded.alpha)
        if options.ratio is not None:
            pixels = fit_to_ratio(pixels, options.ratio)
    else:
        pixels = compose_styled(
            decoded.rgb, mask, style=options.style, ratio=options.ratio, input_alpha=decoded.alpha
        )
    return encode_image(pixels, options.fmt)


def health_report(config: RoutingConfig, monitor: GroupMonitor) -> dict[str, Any]:
    """The health document: overall status, the primary model, the fallback, replicas."""
    rmbg, u2net = monitor.states[RMBG], monitor.states[U2NET]
    rmbg_reason = rmbg.unavailable_reason()
    u2net_ok = u2net.unavailable_reason() is None
    if config.model == RMBG:
        primary, primary_ok, fallback_ok = rmbg, rmbg_reason is None, config.fallback and u2net_ok
    else:
        primary, primary_ok, fallback_ok = u2net, u2net_ok, False
    status = "healthy" if primary_ok else "degraded" if fallback_ok else "unhealthy"
    primary_status = primary.replica_status or {}
    rmbg_status = rmbg.replica_status or {}
    u2net_status = u2net.replica_status or {}
    report: dict[str, Any] = {
        "status": status,
        "model_name": config.model,
        "model_loaded": bool(primary_status.get("loaded")) and primary.running_replicas > 0,
        "device": primary_status.get("device", "cpu" if config.model == U2NET else None),
        "gpu_available": bool(rmbg_status.get("gpu_available", False)),
        "gpu_name": rmbg_status.get("gpu_name"),
        "styles_available": [s.value for s in Style],
        "formats_available": [f.value for f in OutputFormat],
        "fallback": {
            "enabled": config.fallback,
            "model": U2NET,
            "model_name": u2net_status.get("model_name"),
            "loaded": bool(u2net_status.get("loaded")) and u2net.running_replicas > 0,
            "weights": u2net_status.get("weights"),
            "weights_source": u2net_status.get("weights_source"),
            "runtime": u2net_status.get("runtime"),
            "replicas": u2net.running_replicas,
            "error": u2net.load_error,
        },
        "replicas": {RMBG: rmbg.running_replicas, U2NET: u2net.running_replicas},
        "routing": asdict(config),
        "models": {
            RMBG: _group_report(rmbg),
            U2NET: _group_report(u2net),
        },
    }
    if config.model == RMBG and rmbg_reason is not None:
        report["fallback_reason"] = rmbg_reason
    return report


def _group_report(state: GroupState) -> dict[str, Any]:
    reason = state.unavailable_reason()
    return {
        "available": reason is None,
        "unavailable_reason": reason,
        "replica_states": state.replica_states,
        "status": state.replica_status,
    }


# Note: `serve.ingress` snapshots the FastAPI app when the class is decorated, so
# every function the routes use must be defined above this point.
@serve.deployment(name="Ingress", max_ongoing_requests=64)
@serve.ingress(api)
class Ingress:
    """FastAPI ingress; routes mask requests to the model groups."""

    def __init__(
        self,
        u2net: DeploymentHandle,
        rmbg: DeploymentHandle,
        limits: IngressLimits,
    ) -> None:
        self._limits = limits
        handles = {RMBG: rmbg, U2NET: u2net}
        self._monitor = GroupMonitor(handles, limits.status_poll_interval_s)
        self._router = MaskRouter(handles, self._monitor)
        self._requests = Counter(
            "bg_removal_requests",
            description="Finished remove-background requests by model and status.",
            tag_keys=("model", "status"),
        )
        self._latency = Histogram(
            "bg_removal_request_latency_ms",
            description="End-to-end time in the ingress, ms.",
            boundaries=[25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000],
            tag_keys=("model",),
        )

    @property
    def max_upload_bytes(self) -> int:
        return self._limits.max_upload_bytes

    def reconfigure(self, config: dict[str, Any]) -> None:
        """Rollout settings: primary model, fallback on/off, per-group timeouts."""
        self._router.config = RoutingConfig.from_user_config(config)
        logger.info("routing reconfigured: %s", self._router.config)

    @api.post(f"{API_PREFIX}/remove-background")
    async def remove_background(
        self,
        file: Annotated[UploadFile, File(description="The photo: JPEG, PNG, WebP, BMP or TIFF.")],
        ratio: Annotated[str | None, Form(description="Canvas ratio W:H, e.g. 4:5.")] = None,
        style: Annotated[str | None, Form(description="minimal, mood or street.")] = None,
        format: Annotated[str | None, Form(description="png (default), webp, jpeg.")] = None,
    ) -> Response:
        """Cut the subject out of the photo, optionally composed on a styled canvas."""
        self._monitor.start()
        started = time.perf_counter()
        options = RenderOptions.parse(ratio, style, format)
        data = await self._read_upload(file)
        decoded = await asyncio.to_thread(
            decode_image,
            data,
            max_bytes=self._limits.max_upload_bytes,
            max_pixels=self._limits.max_pixels,
        )
        result: MaskResult = await self._router.mask(decoded.rgb)
        body, media_type = await asyncio.to_thread(render, decoded, result.mask, options)
        elapsed_ms = (time.perf_counter() - started) * 1000
        headers = {
            "X-Model-Used": result.model,
            "X-Processing-Time-Ms": f"{elapsed_ms:.1f}",
        }
        if result.fallback_reason:
            headers["X-Fallback-Reason"] = result.fallback_reason
        self._requests.inc(tags={"model": result.model, "status": "200"})
        self._latency.observe(elapsed_ms, tags={"model": result.model})
        logger.info(
            "served %dx%d %s with %s%s in %.0f ms",
            decoded.width,
            decoded.height,
            decoded.format,
            result.model,
            f" (fallback: {result.fallback_reason})" if result.fallback_reason else "",
            elapsed_ms,
        )
        return Response(content=body, media_type=media_type, headers=headers)

    async def _read_upload(self, file: UploadFile) -> bytes:
        """Read the upload (at most limit + 1 bytes), refusing what is over the byte limit."""
        limit = self._limits.max_upload_bytes
        if file.size is not None and file.size > limit:
            raise ImageTooLargeError(f"upload is {file.size} bytes; the limit is {limit} bytes")
        data = await file.read(limit + 1)
        if len(data) > limit:
            raise ImageTooLargeError(f"upload is over the limit of {limit} bytes")
        return data

    @api.get(f"{API_PREFIX}/health")
    async def health(self) -> JSONResponse:
        """Readiness of each model group; 503 when no group can serve."""
        self._monitor.start()
        try:
            await asyncio.wait_for(self._monitor.refresh(), timeout=10)
        except Exception as exc:
            logger.warning("health refresh failed: %r", exc)
        report = health_report(self._router.config, self._monitor)
        return JSONResponse(report, status_code=503 if report["status"] == "unhealthy" else 200)
