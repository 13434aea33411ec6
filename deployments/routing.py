"""Which model group makes a mask, and what happens when it cannot.

`GroupMonitor` keeps a cheap, periodically refreshed view of each group (live
replicas, load errors) so a request never waits on a group known to be down.
`MaskRouter` asks the primary group and, on any failure, the fallback group,
returning which model answered and why the fallback served.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ray import serve
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, RayTaskError
from ray.serve.handle import DeploymentHandle
from ray.serve.metrics import Counter

from deployments.errors import MaskTimeoutError, NoModelAvailableError
from deployments.model_replica import ModelNotLoadedError
from models.errors import ModelError

logger = logging.getLogger("ray.serve")

RMBG = "rmbg-2.0"
U2NET = "u2net"
#: Serve deployment names of the model groups (see deployments/rmbg.py, deployments/u2net.py)
DEPLOYMENT_NAMES = {RMBG: "RMBG2", U2NET: "U2Net"}


@dataclass(frozen=True)
class RoutingConfig:
    """Rollout settings of the ingress (its `user_config`)."""

    model: str = RMBG
    fallback: bool = True
    rmbg_timeout_s: float = 30.0
    u2net_timeout_s: float = 60.0

    @classmethod
    def from_user_config(cls, config: dict[str, Any]) -> RoutingConfig:
        routing = cls(**config)
        if routing.model not in DEPLOYMENT_NAMES:
            raise ValueError(
                f"model must be one of {sorted(DEPLOYMENT_NAMES)}, not {routing.model!r}"
            )
        return routing


@dataclass
class GroupState:
    """What the ingress last learnt about one model group."""

    running_replicas: int = 0
    replica_states: dict[str, int] = field(default_factory=dict)
    replica_status: dict[str, Any] | None = None
    updated_at: float = 0.0

    @property
    def load_error(self) -> dict[str, str] | None:
        status = self.replica_status or {}
        return None if status.get("loaded", True) else status.get("error")

    def unavailable_reason(self) -> str | None:
        """Why this group cannot serve now, as a short code; None when it can."""
        if self.updated_at and self.running_replicas == 0:
            return "no_live_replica"
        error = self.load_error
        if error is not None:
            return f"load_failed:{error.get('code', 'unknown')}"
        return None


@dataclass(frozen=True)
class MaskResult:
    mask: np.ndarray
    model: str
    fallback_reason: str | None = None


class GroupMonitor:
    """Polls Serve's status and each group's `status()` in the background."""

    def __init__(self, handles: dict[str, DeploymentHandle], interval_s: float) -> None:
        self._handles = handles
        self._interval_s = interval_s
        self.states = {name: GroupState() for name in handles}
        self._task: asyncio.Task[None] | None = None
        self._refresh_lock = asyncio.Lock()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
            except RuntimeError as exc:  # the replica is shutting down
                logger.debug("status polling stopped: %s", exc)
                return
            except Exception:  # keep polling; the next round may succeed
                logger.exception("model group status refresh failed")
            await asyncio.sleep(self._interval_s)

    async def refresh(self) -> None:
        async with self._refresh_lock:
            counts = await asyncio.to_thread(_replica_states)
            now = time.monotonic()
            for name, state in self.states.items():
                states = counts.get(DEPLOYMENT_NAMES[name], {})
                state.replica_states = states
                state.running_replicas = states.get("RUNNING", 0)
                state.updated_at = now
                if state.running_replicas:
                    try:
                        state.replica_status = await asyncio.wait_for(
                            self._handles[name].status.remote(), timeout=5
                        )
                    except Exception as exc:
                        logger.warning("status of %s unavailable: %r", name, exc)

    def note_load_failure(self, name: str, code: str, message: str) -> None:
        """A request met a replica that failed to load: remember it until the next poll."""
        state = self.states[name]
        state.replica_status = {
            **(state.replica_status or {}),
            "loaded": False,
            "error": {"code": code, "message": message},
        }


def _replica_states() -> dict[str, dict[str, int]]:
    """Replica counts by state for each deployment of this app (blocking call)."""
    app_name = serve.get_replica_context().app_name
    app = serve.status().applications.get(app_name)
    if app is None:
        return {}
    return {
        name: {str(getattr(k, "value", k)): v for k, v in d.replica_states.items()}
        for name, d in app.deployments.items()
    }


class MaskRouter:
    """Ask the primary model; fall back to U2-Net when it cannot answer."""

    def __init__(self, handles: dict[str, DeploymentHandle], monitor: GroupMonitor) -> None:
        self._handles = handles
        self._monitor = monitor
        self.config = RoutingConfig()
        self._fallbacks = Counter(
            "bg_removal_fallbacks",
            description="Requests served by U2-Net because RMBG-2.0 could not, by reason.",
            tag_keys=("reason",),
        )

    async def mask(self, rgb: np.ndarray) -> MaskResult:
        config = self.config
        reason: str | None = None
        if config.model == RMBG:
            reason = self._monitor.states[RMBG].unavailable_reason()
            if reason is None:
                try:
                    mask = await self._call(RMBG, rgb, config.rmbg_timeout_s)
                    return MaskResult(mask, RMBG)
                except TimeoutError:
                    reason = "timeout"
                except Exception as exc:
                    reason = _failure_reason(exc)
                    if reason.startswith("error:") and not isinstance(_cause(exc), ModelError):
                        logger.exception("RMBG-2.0 failed unexpectedly")
            if not config.fallback:
                raise NoModelAvailableError(
                    f"RMBG-2.0 cannot serve ({reason}) and fallback is off "
                    "(BG_REMOVAL_FALLBACK=false)",
                    code="model_unavailable",
                )
            logger.warning("falling back to U2-Net: %s", reason)
            self._fallbacks.inc(tags={"reason": reason.split(":")[0]})
        try:
            mask = await self._call(U2NET, rgb, config.u2net_timeout_s)
        except TimeoutError as exc:
            raise MaskTimeoutError(
                f"U2-Net did not answer within {config.u2net_timeout_s:g} s"
                + (f" (RMBG-2.0: {reason})" if reason else "")
            ) from exc
        except NoModelAvailableError:
            raise
        except Exception as exc:
            detail = f"{_failure_reason(exc)}: {_message(exc)}"
            raise NoModelAvailableError(
                f"U2-Net cannot serve ({detail})"
                + (f"; RMBG-2.0 cannot serve ({reason})" if reason else "")
            ) from exc
        return MaskResult(mask, U2NET, reason)

    async def _call(self, name: str, rgb: np.ndarray, timeout_s: float) -> np.ndarray:
        state = self._monitor.states[name]
        if name == U2NET and (reason := state.unavailable_reason()):
            raise NoModelAvailableError(f"U2-Net cannot serve ({reason})")
        response = self._handles[name].predict.remote(rgb)
        try:
            return await asyncio.wait_for(response, timeout=timeout_s)
        except TimeoutError:
            response.cancel()
            raise
        except Exception as exc:
            cause = _cause(exc)
            if isinstance(cause, ModelNotLoadedError):
                self._monitor.note_load_failure(name, cause.code, str(cause))
            raise


def _cause(exc: BaseException) -> BaseException:
    """The exception raised inside the replica, unwrapped from Ray's RayTaskError."""
    return exc.cause if isinstance(exc, RayTaskError) and exc.cause is not None else exc


def _message(exc: BaseException) -> str:
    """The last line of the replica's error message (Ray prefixes tracebacks)."""
    lines = str(_cause(exc)).strip().splitlines()
    return lines[-1] if lines else ""


def _failure_reason(exc: BaseException) -> str:
    """A short code for X-Fallback-Reason and metrics: `load_failed:<code>`, `error:<code>`, ..."""
    cause = _cause(exc)
    if isinstance(cause, ModelNotLoadedError):
        return f"load_failed:{cause.code}"
    if isinstance(cause, ModelError):
        return f"error:{cause.code}"
    if isinstance(cause, (ActorDiedError, ActorUnavailableError, RayActorError)):
        return "replica_died"
    return f"error:{type(cause).__name__}"
