"""Model groups over the registry, without a cluster: each tier's flat settings seen as one
typed group view, and the app builder binding one Serve deployment per tier from it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, get_args

import pytest
from ray.serve import Application

from deployments.app import IDLE_AUTOSCALING, SHUTDOWN_MARGIN_S, build_app, replica_class
from deployments.settings import ModelName, ServiceSettings, timeout_setting
from models.registry import FALLBACK, RMBG, TIERS, U2NET

ROOT = Path(__file__).resolve().parents[2]

#: no BG_REMOVAL_* or U2NET_HOME from the developer's shell in the settings
pytestmark = pytest.mark.usefixtures("clean_env")


def _bound(app: Application) -> Any:
    # Serve has no public accessor for what an Application binds; tests only.
    return app._bound_deployment


def _groups(app: Application) -> dict[str, Any]:
    """Tier name -> the bound deployment the ingress gets for it."""
    groups, _config = _bound(app).init_args
    return {name: _bound(group) for name, group in groups.items()}


def test_every_tier_has_every_group_setting() -> None:
    """A tier added to the registry without its `<prefix>_*` settings fails here, not at
    deploy time; `model` accepts exactly the registry's tiers."""
    settings = ServiceSettings()
    for name, tier in TIERS.items():
        group = settings.group(name)
        assert group.name == name
        assert isinstance(group.load_config, tier.config_type)
        assert timeout_setting(name) == f"{tier.settings_prefix}_timeout_s"
    assert set(get_args(ModelName)) == set(TIERS)
    assert [name for name, tier in TIERS.items() if tier.fallback] == [FALLBACK] == [U2NET]


def test_group_view_maps_the_flat_rmbg_settings() -> None:
    settings = ServiceSettings(
        rmbg_num_cpus=2,
        rmbg_num_gpus=0.25,
        rmbg_num_replicas=3,
        rmbg_max_batch_size=5,
        rmbg_batch_wait_timeout_s=0.02,
        rmbg_timeout_s=12,
        rmbg_max_ongoing_requests=9,
        rmbg_max_queued_requests=11,
        rmbg_chaos_error_rate=0.5,
        rmbg_path="/weights/rmbg",
    )
    group = settings.group(RMBG)
    assert (group.num_cpus, group.num_gpus, group.num_replicas, group.autoscaling) == (
        2,
        0.25,
        3,
        None,
    )
    assert (group.max_batch_size, group.batch_wait_timeout_s, group.timeout_s) == (5, 0.02, 12)
    assert (group.max_ongoing_requests, group.max_queued_requests) == (9, 11)
    assert group.deployed and group.load_config == settings.rmbg_load_config()
    assert group.load_config.source == "/weights/rmbg"
    assert group.user_config() == settings.rmbg_user_config()
    assert group.user_config() == {
        "max_batch_size": 5,
        "batch_wait_timeout_s": 0.02,
        "chaos_error_rate": 0.5,
    }
    # no share configured: decided at build time from the cluster
    assert ServiceSettings().group(RMBG).num_gpus is None


def test_group_view_maps_the_flat_u2net_settings_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same `BG_REMOVAL_*` variables as before; U2-Net has no GPU and no chaos setting."""
    autoscaling = '{"min_replicas": 1, "max_replicas": 4}'
    for var, value in {
        "BG_REMOVAL_U2NET_NUM_CPUS": "1.5",
        "BG_REMOVAL_U2NET_AUTOSCALING": autoscaling,
        "BG_REMOVAL_U2NET_MAX_BATCH_SIZE": "6",
        "BG_REMOVAL_U2NET_BATCH_WAIT_TIMEOUT_S": "0.002",
        "BG_REMOVAL_U2NET_TIMEOUT_S": "7",
        "BG_REMOVAL_U2NET_MAX_ONGOING_REQUESTS": "3",
        "BG_REMOVAL_U2NET_MAX_QUEUED_REQUESTS": "13",
        "BG_REMOVAL_U2NET_MODEL": "u2netp",
    }.items():
        monkeypatch.setenv(var, value)
    settings = ServiceSettings()
    group = settings.group(U2NET)
    assert (group.num_cpus, group.num_gpus, group.num_replicas) == (1.5, 0, None)
    assert group.autoscaling == {"min_replicas": 1, "max_replicas": 4}
    assert (group.max_batch_size, group.batch_wait_timeout_s, group.timeout_s) == (6, 0.002, 7)
    assert (group.max_ongoing_requests, group.max_queued_requests) == (3, 13)
    assert group.chaos_error_rate is None
    assert group.user_config() == settings.u2net_user_config()
    assert group.user_config() == {"max_batch_size": 6, "batch_wait_timeout_s": 0.002}
    assert group.load_config.model_name == "u2netp"
    assert settings.routing_user_config() == {
        "model": RMBG,
        "fallback": True,
        "rmbg_timeout_s": 30.0,
        "u2net_timeout_s": 7,
    }
    assert settings.request_deadline_s == 30.0 + 7


def test_the_fallback_group_runs_in_every_mode() -> None:
    assert all(ServiceSettings().group(name).deployed for name in TIERS)
    u2net_mode = ServiceSettings(model="u2net")
    assert not u2net_mode.group(RMBG).deployed and not u2net_mode.deploys_rmbg
    assert u2net_mode.group(U2NET).deployed
    # the deadline covers whichever primary a rollout in place may pick
    assert u2net_mode.request_deadline_s == 30.0 + 60.0


def test_build_app_binds_one_deployment_per_tier() -> None:
    settings_args: dict[str, Any] = {
        "device": "cpu",
        "rmbg_num_replicas": 2,
        "rmbg_timeout_s": 5,
        "u2net_autoscaling": {"min_replicas": 1, "max_replicas": 3},
        "u2net_max_queued_requests": 7,
    }
    settings = ServiceSettings(**settings_args)
    app = build_app(settings_args)
    ingress = _bound(app)
    assert ingress.name == "Ingress"
    assert ingress._deployment_config.user_config == settings.routing_user_config()
    groups = _groups(app)
    assert list(groups) == list(TIERS)
    for name, deployment in groups.items():
        group = settings.group(name)
        config = deployment._deployment_config
        assert deployment.name == TIERS[name].deployment
        assert deployment.init_args[0] == group.load_config
        assert deployment.init_args[1] == settings.recovery_config()
        assert config.user_config == group.user_config()
        assert config.max_ongoing_requests == group.max_ongoing_requests
        assert config.max_queued_requests == group.max_queued_requests
        assert config.graceful_shutdown_timeout_s == group.timeout_s + SHUTDOWN_MARGIN_S
        assert deployment.ray_actor_options["num_cpus"] == group.num_cpus
        # device=cpu: no GPU share for any tier
        assert deployment.ray_actor_options["num_gpus"] == 0
    assert groups[RMBG]._deployment_config.num_replicas == 2
    assert groups[U2NET]._deployment_config.autoscaling_config.max_replicas == 3


def test_build_app_gives_an_explicit_gpu_share() -> None:
    groups = _groups(build_app({"rmbg_num_gpus": 0.25}))
    assert groups[RMBG].ray_actor_options["num_gpus"] == 0.25
    assert groups[U2NET].ray_actor_options["num_gpus"] == 0


def test_u2net_mode_keeps_an_idle_rmbg_group_with_no_resources() -> None:
    """The group exists (a config that tunes RMBG2 stays valid), with no replica or GPU."""
    groups = _groups(build_app({"model": "u2net", "rmbg_num_gpus": 0.5, "rmbg_num_replicas": 2}))
    rmbg = groups[RMBG]
    assert rmbg.ray_actor_options == {"num_cpus": 0, "num_gpus": 0}
    autoscaling = rmbg._deployment_config.autoscaling_config
    assert (autoscaling.min_replicas, autoscaling.initial_replicas, autoscaling.max_replicas) == (
        IDLE_AUTOSCALING["min_replicas"],
        IDLE_AUTOSCALING["initial_replicas"],
        IDLE_AUTOSCALING["max_replicas"],
    )
    assert groups[U2NET].ray_actor_options["num_cpus"] == 1.0


def test_registry_names_each_tiers_serve_deployment() -> None:
    for name, tier in TIERS.items():
        assert replica_class(name).name == tier.deployment


def test_models_stay_free_of_ray() -> None:
    """The registry names deployment classes by import path only: the CLI and batch jobs
    load models without Ray."""
    code = "import sys, models.registry; sys.exit('ray' in sys.modules)"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
