"""The application builder that `serve run` / `serve deploy` call.

`import_path: deployments.app:build_app` in a Serve config; its `args:` block
becomes `ServiceSettings` (which also reads `BG_REMOVAL_*` variables). Settings
are read once here and handed to each deployment.
"""

from __future__ import annotations

import logging
from typing import Any

import ray
from ray.serve import Application

from deployments.ingress import Ingress, IngressConfig
from deployments.rmbg import RMBGDeployment
from deployments.settings import ServiceSettings
from deployments.u2net import U2NetDeployment
from imaging.presets import load_presets, preset_fields

logger = logging.getLogger("ray.serve")

#: GPU share of one RMBG-2.0 replica when the config does not say (two per GPU).
DEFAULT_GPU_SHARE = 0.5
#: Memory of an idle ingress replica (Python, FastAPI, Ray's worker), bytes.
INGRESS_BASE_MEMORY = 512 * 1024**2
#: Memory per pixel of the ingress's pixel budget (input + output pixels): the decoded RGB
#: (3 bytes), mask and input alpha (2), the refined-edge copy (3) and the estimator's
#: working arrays (up to 27 over the soft-edge crop) of the input, the composed RGBA (4)
#: and the encoder's buffers of the output; per budget pixel, with headroom.
INGRESS_BYTES_PER_BUDGET_PIXEL = 20
#: Seconds a stopping replica gets beyond its longest request before it is killed.
SHUTDOWN_MARGIN_S = 10.0


def build_app(args: dict[str, Any] | None = None) -> Application:
    """Build the app from config args (highest priority) and environment variables."""
    settings = ServiceSettings(**(args or {}))
    return build_app_from_settings(settings)


def build_app_from_settings(settings: ServiceSettings) -> Application:
    recovery = settings.recovery_config()
    u2net = U2NetDeployment.options(
        ray_actor_options={"num_cpus": settings.u2net_num_cpus, "num_gpus": 0},
        user_config=settings.u2net_user_config(),
        max_ongoing_requests=settings.u2net_max_ongoing_requests,
        max_queued_requests=settings.u2net_max_queued_requests,
        graceful_shutdown_timeout_s=settings.u2net_timeout_s + SHUTDOWN_MARGIN_S,
        **_scaling(settings.u2net_num_replicas, settings.u2net_autoscaling),
    ).bind(settings.u2net_load_config(), recovery)
    if settings.deploys_rmbg:
        rmbg_resources = {"num_cpus": settings.rmbg_num_cpus, "num_gpus": _gpu_share(settings)}
        rmbg_scaling = _scaling(settings.rmbg_num_replicas, settings.rmbg_autoscaling)
    else:
        # `u2net` mode: the group exists with zero replicas and no GPU, so a config
        # file that tunes RMBG2 (deployments: - name: RMBG2) stays valid. Serve
        # refuses num_replicas=0; an autoscaling range of 0..0 is not allowed
        # either, and the router never sends it a request, so it stays at zero.
        rmbg_resources = {"num_cpus": 0, "num_gpus": 0}
        rmbg_scaling = {
            "autoscaling_config": {"min_replicas": 0, "initial_replicas": 0, "max_replicas": 1}
        }
    rmbg = RMBGDeployment.options(
        ray_actor_options=rmbg_resources,
        user_config=settings.rmbg_user_config(),
        max_ongoing_requests=settings.rmbg_max_ongoing_requests,
        max_queued_requests=settings.rmbg_max_queued_requests,
        graceful_shutdown_timeout_s=settings.rmbg_timeout_s + SHUTDOWN_MARGIN_S,
        **rmbg_scaling,
    ).bind(settings.rmbg_load_config(), recovery)
    config = IngressConfig(
        max_upload_bytes=settings.max_upload_bytes,
        max_pixels=settings.max_pixels,
        max_output_pixels=settings.max_output_pixels,
        pixel_budget=settings.ingress_pixel_budget,
        retry_after_s=settings.retry_after_s,
        status_poll_interval_s=settings.status_poll_interval_s,
        api_key_hashes=settings.api_key_hashes(),
        health_details=settings.health_details,
        cors_allow_origins=tuple(settings.cors_allow_origins),
        presets=preset_fields(load_presets(settings.presets_file)),
    )
    return Ingress.options(
        ray_actor_options={
            "num_cpus": settings.ingress_num_cpus,
            "num_gpus": 0,
            "memory": ingress_memory_bytes(settings),
        },
        user_config=settings.routing_user_config(),
        max_ongoing_requests=settings.ingress_max_ongoing_requests,
        max_queued_requests=settings.ingress_max_queued_requests,
        # The ingress holds a request for its whole deadline, plus decode and encode.
        graceful_shutdown_timeout_s=settings.request_deadline_s + 2 * SHUTDOWN_MARGIN_S,
        **_scaling(settings.ingress_num_replicas, settings.ingress_autoscaling),
    ).bind(u2net, rmbg, config)


def ingress_memory_bytes(settings: ServiceSettings) -> int:
    """Memory Ray reserves for one ingress replica: its base plus its pixel budget."""
    return INGRESS_BASE_MEMORY + settings.ingress_pixel_budget * INGRESS_BYTES_PER_BUDGET_PIXEL


def _scaling(count: int | None, autoscaling: dict[str, Any] | None) -> dict[str, Any]:
    """Replica options of one group: a fixed count, an autoscaling policy, or Serve's default."""
    if count is not None and autoscaling is not None:
        raise ValueError("set either a fixed replica count or autoscaling for a group, not both")
    if autoscaling is not None:
        return {"autoscaling_config": autoscaling}
    return {} if count is None else {"num_replicas": count}


def _gpu_share(settings: ServiceSettings) -> float:
    """GPUs per RMBG-2.0 replica: as configured, else half a GPU where the cluster has any."""
    if settings.rmbg_num_gpus is not None:
        return settings.rmbg_num_gpus
    if settings.device == "cpu":
        return 0.0
    has_gpu = ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0
    if settings.device == "cuda" or has_gpu:
        return DEFAULT_GPU_SHARE
    logger.info("no GPU in the cluster: RMBG-2.0 replicas run on the CPU")
    return 0.0
