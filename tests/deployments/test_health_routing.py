"""The ingress's routing config and health report over the registry's tiers, without a
cluster: per-tier deadline shares from the flat `user_config`, and one health entry per
tier with the same document shape as before."""

from __future__ import annotations

from typing import Any

import pytest

from deployments.group_monitor import GroupState
from deployments.health import health_report
from deployments.routing import RoutingConfig
from models.registry import RMBG, TIERS, U2NET
from tests.support.http import GUIDE_HEALTH_FIELDS


class _Monitor:
    """What `health_report` reads of a `GroupMonitor`: a state per group."""

    def __init__(self, states: dict[str, GroupState]) -> None:
        self.states = states


def _group(loaded: bool | None, **status: Any) -> GroupState:
    """A polled group: None: no live replica; else one replica, loaded or failed."""
    state = GroupState(updated_at=1.0)
    if loaded is None:
        return state
    state.running_replicas = 1
    state.replica_states = {"RUNNING": 1}
    report = {"replica_id": "r1", "loaded": loaded, **status}
    if not loaded:
        report["error"] = {"code": "weights_not_found", "message": "no weights"}
    state.replicas = {"r1": (report, 1.0)}
    return state


def test_routing_reads_each_tiers_timeout_from_the_flat_user_config() -> None:
    routing = RoutingConfig.from_user_config(
        {"model": U2NET, "fallback": False, "rmbg_timeout_s": 4, "u2net_timeout_s": 9}
    )
    assert routing.timeout_s(RMBG) == 4 and routing.timeout_s(U2NET) == 9
    assert routing.as_user_config() == {
        "model": U2NET,
        "fallback": False,
        "rmbg_timeout_s": 4,
        "u2net_timeout_s": 9,
    }
    # a partial user_config (an operator's `deployments: - name: Ingress`) keeps the defaults
    partial = RoutingConfig.from_user_config({"model": RMBG, "rmbg_timeout_s": 0.5})
    assert partial.timeouts_s == {RMBG: 0.5, U2NET: 60.0}
    assert RoutingConfig().timeouts_s == {RMBG: 30.0, U2NET: 60.0}


@pytest.mark.parametrize(
    ("config", "match"),
    [({"model": "sam"}, "model must be one of"), ({"sam_timeout_s": 1}, "unknown routing")],
)
def test_routing_refuses_unknown_models_and_settings(config: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RoutingConfig.from_user_config(config)


def test_health_has_one_entry_per_tier_and_the_public_shape() -> None:
    monitor = _Monitor({RMBG: _group(True), U2NET: _group(True)})
    report = health_report(RoutingConfig(), monitor, details=False)
    assert report == {
        "status": "healthy",
        "model_name": RMBG,
        "model_loaded": True,
        "device": None,
        "gpu_available": False,
        "gpu_name": None,
        "styles_available": ["minimal", "mood", "street"],
        "formats_available": ["png", "webp", "jpeg"],
        "models": {name: {"available": True, "ready_replicas": 1} for name in TIERS},
    }


def test_health_is_degraded_when_the_primary_cannot_serve_and_says_why() -> None:
    monitor = _Monitor({RMBG: _group(False), U2NET: _group(True, model_name="u2netp")})
    report = health_report(RoutingConfig(), monitor, details=True)
    assert report["status"] == "degraded"
    assert report["fallback_reason"] == "load_failed:weights_not_found"
    assert report["replicas"] == {RMBG: 1, U2NET: 1}
    assert report["fallback"]["model"] == U2NET and report["fallback"]["loaded"] is True
    assert report["fallback"]["model_name"] == "u2netp"
    assert report["routing"] == {
        "model": RMBG,
        "fallback": True,
        "rmbg_timeout_s": 30.0,
        "u2net_timeout_s": 60.0,
    }
    assert set(report["models"][RMBG]) == {
        "available",
        "ready_replicas",
        "unavailable_reason",
        "replica_states",
        "status",
        "replicas",
    }
    no_fallback = RoutingConfig.from_user_config({"model": RMBG, "fallback": False})
    assert health_report(no_fallback, monitor, details=False)["status"] == "unhealthy"


@pytest.mark.parametrize("details", [False, True])
def test_health_reports_gpu_facts_from_the_gpu_tier(details: bool) -> None:
    """The guide's fields are public: the same with and without details."""
    monitor = _Monitor(
        {
            RMBG: _group(True, device="cuda", gpu_available=True, gpu_name="H100"),
            U2NET: _group(True, device="cpu"),
        }
    )
    report = health_report(RoutingConfig(), monitor, details=details)
    assert set(GUIDE_HEALTH_FIELDS) <= set(report)
    assert report["styles_available"] == ["minimal", "mood", "street"]
    assert ("replicas" in report) is details and ("fallback" in report) is details
    assert (report["device"], report["gpu_available"], report["gpu_name"]) == (
        "cuda",
        True,
        "H100",
    )
    assert report["model_loaded"] is True


def test_u2net_mode_health_needs_only_u2net() -> None:
    """In `u2net` mode the idle RMBG2 group has no replica: healthy, and no fallback reason."""
    monitor = _Monitor({RMBG: _group(None), U2NET: _group(True)})
    report = health_report(RoutingConfig(model=U2NET), monitor, details=True)
    assert report["status"] == "healthy" and "fallback_reason" not in report
    assert report["models"][RMBG]["available"] is False
    assert report["device"] == "cpu" and report["gpu_available"] is False
    down = _Monitor({RMBG: _group(True), U2NET: _group(None)})
    assert health_report(RoutingConfig(model=U2NET), down, details=False)["status"] == "unhealthy"


def test_health_says_which_precision_serves_and_the_int8_build_state_to_anyone() -> None:
    """Issue 21: the precision serving, the build state with its reason, the guard's counts;
    a failed build's error text (paths, tracebacks) only in the detailed report."""
    guard = {"images": 40, "redone_f32": 2, "max_soft_share": 0.06}
    building = {"state": "building", "reason": "1 CPU(s) at nice 10", "for_s": 12.0}
    monitor = _Monitor(
        {
            RMBG: _group(True, precision="float16"),
            U2NET: _group(True, precision="f32", int8={**building, "guard": None}),
        }
    )
    report = health_report(RoutingConfig(), monitor, details=False)
    assert report["models"][U2NET] == {
        "available": True,
        "ready_replicas": 1,
        "precision": "f32",
        "int8": {"state": "building", "reason": "1 CPU(s) at nice 10", "guard": None},
    }
    assert report["models"][RMBG]["precision"] == "float16"
    serving = {"state": "ready", "reason": "serving INT8", "guard": guard}
    monitor.states[U2NET] = _group(True, precision="int8", int8=serving)
    public = health_report(RoutingConfig(), monitor, details=False)["models"][U2NET]
    assert public["precision"] == "int8" and public["int8"] == serving
    failed = {"state": "failed", "reason": "OSError: /models/u2net: disk full", "guard": None}
    monitor.states[U2NET] = _group(True, precision="f32", int8=failed)
    public = health_report(RoutingConfig(), monitor, details=False)["models"][U2NET]
    assert public["int8"] == {"state": "failed", "guard": None}
    detailed = health_report(RoutingConfig(), monitor, details=True)["models"][U2NET]
    assert "disk full" in str(detailed)
