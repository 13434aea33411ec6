"""The application builder that `serve run` / `serve deploy` call.

`import_path: deployments.app:build_app` in a Serve config; its `args:` block
becomes `ServiceSettings` (which also reads `BG_REMOVAL_*` variables and the
`.env` file). Settings are read once here and handed to each deployment.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

import ray
from ray.serve import Application, Deployment

from deployments.ingress import Ingress, IngressConfig
from deployments.settings import GroupSettings, RecoveryConfig, ServiceSettings
from imaging.memory import render_memory
from imaging.presets import load_presets, preset_fields
from models.registry import TIERS, get_tier

logger = logging.getLogger("ray.serve")

#: GPU share of one RMBG-2.0 replica when the config does not say (two per GPU).
DEFAULT_GPU_SHARE = 0.5
#: Seconds a stopping replica gets beyond its longest request before it is killed.
SHUTDOWN_MARGIN_S = 10.0
#: Replica options of a group that runs no replica in this mode (e.g. RMBG2 in `u2net`
#: mode): the group still exists, so a config file that tunes it (`deployments: - name:
#: RMBG2`) stays valid. Serve refuses num_replicas=0 and an autoscaling range of 0..0; the
#: router never sends it a request, so it stays at zero.
IDLE_AUTOSCALING: dict[str, int] = {"min_replicas": 0, "initial_replicas": 0, "max_replicas": 1}


def build_app(args: dict[str, Any] | None = None) -> Application:
    """Build the app from config args (highest priority), environment variables and the
    settings file."""
    settings = ServiceSettings.load(**(args or {}))
    logger.info(
        "settings: model %s, fallback %s, file %s",
        settings.model,
        settings.fallback,
        settings.env_file or "none",
    )
    return build_app_from_settings(settings)


def build_app_from_settings(settings: ServiceSettings) -> Application:
    """One replica group per model tier (`models.registry.TIERS`), then the ingress."""
    recovery = settings.recovery_config()
    groups = {name: model_group(settings.group(name), recovery, settings) for name in TIERS}
    config = IngressConfig(
        max_upload_bytes=settings.max_upload_bytes,
        max_pixels=settings.max_pixels,
        max_output_pixels=settings.max_output_pixels,
        pixel_budget=settings.ingress_pixel_budget,
        retry_after_s=settings.retry_after_s,
        status_poll_interval_s=settings.status_poll_interval_s,
        status_poll_idle_after_s=settings.status_poll_idle_after_s,
        api_key_hashes=settings.api_key_hashes(),
        health_details=settings.health_details,
        cors_allow_origins=tuple(settings.cors_allow_origins),
        presets=preset_fields(load_presets(settings.presets_file)),
        settings_file=settings.env_file,
        url_fetch=settings.fetch_config(),
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
    ).bind(groups, config)


def model_group(
    group: GroupSettings, recovery: RecoveryConfig, settings: ServiceSettings
) -> Application:
    """Tier ``group.name``'s Serve deployment, bound with its load config."""
    resources: dict[str, float]
    scaling: dict[str, Any]
    if group.deployed:
        resources = {"num_cpus": group.num_cpus, "num_gpus": _gpu_share(group, settings)}
        scaling = _scaling(group.num_replicas, group.autoscaling)
    else:
        resources = {"num_cpus": 0, "num_gpus": 0}
        scaling = {"autoscaling_config": dict(IDLE_AUTOSCALING)}
    return (
        replica_class(group.name)
        .options(
            ray_actor_options=resources,
            user_config=group.user_config(),
            max_ongoing_requests=group.max_ongoing_requests,
            max_queued_requests=group.max_queued_requests,
            graceful_shutdown_timeout_s=group.timeout_s + SHUTDOWN_MARGIN_S,
            **scaling,
        )
        .bind(group.load_config, recovery)
    )


def replica_class(name: str) -> Deployment:
    """The Serve deployment the registry names for tier ``name`` (`module:attribute`)."""
    module, _, attribute = get_tier(name).replica_class.partition(":")
    deployment = getattr(importlib.import_module(module), attribute)
    if not isinstance(deployment, Deployment):
        raise TypeError(f"{name}: {get_tier(name).replica_class} is not a Serve deployment")
    return deployment


def ingress_memory_bytes(settings: ServiceSettings) -> int:
    """Memory Ray reserves for one ingress replica: its base plus its pixel budget."""
    return render_memory(settings.ingress_pixel_budget)


def _scaling(count: int | None, autoscaling: dict[str, Any] | None) -> dict[str, Any]:
    """Replica options of one group: a fixed count, an autoscaling policy, or Serve's default."""
    if count is not None and autoscaling is not None:
        raise ValueError("set either a fixed replica count or autoscaling for a group, not both")
    if autoscaling is not None:
        return {"autoscaling_config": autoscaling}
    return {} if count is None else {"num_replicas": count}


def _gpu_share(group: GroupSettings, settings: ServiceSettings) -> float:
    """GPUs per replica: as configured, else half a GPU where the cluster has any."""
    if group.num_gpus is not None:
        return group.num_gpus
    if settings.device == "cpu":
        return 0.0
    has_gpu = ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0
    if settings.device == "cuda" or has_gpu:
        return DEFAULT_GPU_SHARE
    logger.info("no GPU in the cluster: %s replicas run on the CPU", get_tier(group.name).label)
    return 0.0
