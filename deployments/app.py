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

from deployments.ingress import Ingress, IngressLimits
from deployments.rmbg import RMBGDeployment
from deployments.settings import ServiceSettings
from deployments.u2net import U2NetDeployment

logger = logging.getLogger("ray.serve")

#: GPU share of one RMBG-2.0 replica when the config does not say (two per GPU).
DEFAULT_GPU_SHARE = 0.5


def build_app(args: dict[str, Any] | None = None) -> Application:
    """Build the app from config args (highest priority) and environment variables."""
    settings = ServiceSettings(**(args or {}))
    return build_app_from_settings(settings)


def build_app_from_settings(settings: ServiceSettings) -> Application:
    u2net = U2NetDeployment.options(
        ray_actor_options={"num_cpus": settings.u2net_num_cpus, "num_gpus": 0},
        user_config=settings.u2net_user_config(),
        **_scaling(settings.u2net_num_replicas, settings.u2net_autoscaling),
    ).bind(settings.u2net_load_config())
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
        **rmbg_scaling,
    ).bind(settings.rmbg_load_config())
    limits = IngressLimits(
        max_upload_bytes=settings.max_upload_bytes,
        max_pixels=settings.max_pixels,
        status_poll_interval_s=settings.status_poll_interval_s,
    )
    return Ingress.options(
        ray_actor_options={"num_cpus": settings.ingress_num_cpus, "num_gpus": 0},
        user_config=settings.routing_user_config(),
        **_scaling(settings.ingress_num_replicas, settings.ingress_autoscaling),
    ).bind(u2net, rmbg, limits)


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
