"""The health document (`GET /api/v1/health`): the migration guide's fields for anyone,
replica details for operators.

What anyone may read is the guide's contract (status, model_name, model_loaded, device,
gpu_available, gpu_name, ...) plus each model's availability; pids, paths, errors and
replica ids are internal and come only with `details` (a valid key where keys are set).
"""

from __future__ import annotations

from typing import Any

from deployments.group_monitor import GroupMonitor, GroupState
from deployments.routing import RoutingConfig
from imaging.options import OutputFormat, Style
from models.registry import FALLBACK, TIERS

#: INT8 build states whose reason is public: the others' reasons may carry internals
_PUBLIC_INT8_REASONS = frozenset({"off", "ready", "refused", "waiting", "building"})


def _public_model_facts(status: dict[str, Any]) -> dict[str, Any]:
    """What anyone may know of a group's serving: its precision and, for U2-Net, the INT8
    build's state (a failed build's error text is for the detailed report only)."""
    facts: dict[str, Any] = {}
    if "precision" in status:
        facts["precision"] = status["precision"]
    int8 = status.get("int8")
    if isinstance(int8, dict):
        public = {"state": int8.get("state"), "guard": int8.get("guard")}
        if int8.get("state") in _PUBLIC_INT8_REASONS:
            public["reason"] = int8.get("reason")
        facts["int8"] = public
    return facts


def health_report(config: RoutingConfig, monitor: GroupMonitor, *, details: bool) -> dict[str, Any]:
    """The health document: the migration guide's fields and each model's availability for
    anyone; replica details (internal: pids, paths, errors) when `details`.

    One entry per model tier, in registry order; `fallback` describes the fallback tier.
    """
    states = {name: monitor.states[name] for name in TIERS if name in monitor.states}
    reasons = {name: state.unavailable_reason() for name, state in states.items()}
    primary, fallback = states[config.model], states[FALLBACK]
    primary_reason = reasons[config.model]
    has_fallback = config.model != FALLBACK
    fallback_ok = has_fallback and config.fallback and reasons[FALLBACK] is None
    status = "healthy" if primary_reason is None else "degraded" if fallback_ok else "unhealthy"
    primary_status = primary.replica_status or {}
    fallback_status = fallback.replica_status or {}
    # GPU facts come from the tiers whose replicas may hold one (RMBG-2.0's)
    gpu_statuses = [
        state.replica_status or {} for name, state in states.items() if TIERS[name].uses_gpu
    ]
    # The migration guide's document, for anyone: facts about the configured model and the
    # API, nothing internal (no pids, paths, errors or replica ids).
    report: dict[str, Any] = {
        "status": status,
        "model_name": config.model,
        "model_loaded": bool(primary_status.get("loaded")) and primary.running_replicas > 0,
        "device": primary_status.get("device", None if TIERS[config.model].uses_gpu else "cpu"),
        "gpu_available": any(bool(s.get("gpu_available", False)) for s in gpu_statuses),
        "gpu_name": next((s["gpu_name"] for s in gpu_statuses if s.get("gpu_name")), None),
        "styles_available": [s.value for s in Style],
        "formats_available": [f.value for f in OutputFormat],
        "models": {
            name: {
                "available": reasons[name] is None,
                "ready_replicas": state.ready_replicas,
                **_public_model_facts(state.replica_status or {}),
            }
            for name, state in states.items()
        },
    }
    if has_fallback and primary_reason is not None:
        report["fallback_reason"] = primary_reason
    if not details:
        return report
    report.update(
        {
            "fallback": {
                "enabled": config.fallback,
                "model": FALLBACK,
                "model_name": fallback_status.get("model_name"),
                "loaded": fallback.ready_replicas > 0 and fallback.running_replicas > 0,
                "weights": fallback_status.get("weights"),
                "weights_source": fallback_status.get("weights_source"),
                "runtime": fallback_status.get("runtime"),
                "replicas": fallback.running_replicas,
                "error": fallback.load_error,
            },
            "replicas": {name: state.running_replicas for name, state in states.items()},
            "routing": config.as_user_config(),
        }
    )
    for name, state in states.items():
        report["models"][name].update(_group_report(state))
    return report


def _group_report(state: GroupState) -> dict[str, Any]:
    return {
        "unavailable_reason": state.unavailable_reason(),
        "replica_states": state.replica_states,
        "status": state.replica_status,
        "replicas": sorted(state.statuses, key=lambda s: str(s.get("replica_id"))),
    }
