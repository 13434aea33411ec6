"""Which model group makes a mask, and what happens when it cannot.

`deployments.group_monitor.GroupMonitor` keeps a cheap, periodically refreshed view of each
group (live replicas, load errors) so a request never waits on a group known to be down.
`MaskRouter` asks the primary group and, on any failure, the fallback group,
returning which model answered and why the fallback served.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle
from ray.serve.metrics import Counter

from deployments.admission import DeadlineAdmission
from deployments.errors import MaskTimeoutError, NoModelAvailableError, OverloadedError
from deployments.group_monitor import GroupMonitor, GroupState, live_replicas
from deployments.model_replica import ModelNotLoadedError
from deployments.settings import ServiceSettings, timeout_setting
from imaging.pipeline import MaskOutcome
from models.errors import ModelError
from models.registry import FALLBACK, RMBG, TIERS, get_tier

logger = logging.getLogger("ray.serve")


def default_timeouts() -> dict[str, float]:
    """Each tier's deadline share when the ingress's `user_config` does not set it: the
    settings' defaults (`rmbg_timeout_s`, `u2net_timeout_s`, ...)."""
    fields = ServiceSettings.model_fields
    return {name: fields[timeout_setting(name)].default for name in TIERS}


@dataclass(frozen=True)
class RoutingConfig:
    """Rollout settings of the ingress (its `user_config`): the primary model, fallback
    on/off and each tier's share of a request's deadline, keyed by tier name."""

    model: str = RMBG
    fallback: bool = True
    timeouts_s: Mapping[str, float] = field(default_factory=default_timeouts)

    def timeout_s(self, name: str) -> float:
        """Tier ``name``'s share of a request's deadline, s."""
        return self.timeouts_s[name]

    @classmethod
    def from_user_config(cls, config: dict[str, Any]) -> RoutingConfig:
        """From the flat `user_config` (`model`, `fallback`, `<prefix>_timeout_s` per tier)."""
        values = dict(config)
        timeouts = default_timeouts()
        for name in TIERS:
            if (key := timeout_setting(name)) in values:
                timeouts[name] = values.pop(key)
        unknown = sorted(set(values) - {"model", "fallback"})
        if unknown:
            allowed = ["model", "fallback", *(timeout_setting(name) for name in TIERS)]
            raise ValueError(f"unknown routing setting(s) {unknown}; allowed: {allowed}")
        routing = cls(**values, timeouts_s=timeouts)
        if routing.model not in TIERS:
            raise ValueError(f"model must be one of {sorted(TIERS)}, not {routing.model!r}")
        return routing

    def as_user_config(self) -> dict[str, Any]:
        """The flat `user_config` this was read from (health's `routing` shows it)."""
        config: dict[str, Any] = {"model": self.model, "fallback": self.fallback}
        for name, timeout_s in self.timeouts_s.items():
            config[timeout_setting(name)] = timeout_s
        return config


#: How often a request waiting on a model group checks whether it can still finish in time.
SHED_CHECK_S = 1.0


class GroupBusyError(Exception):
    """The group would likely not answer within the request's share of its deadline."""


#: What "this group is full right now" looks like: Serve's queue bound, or our own estimate.
OVERLOADED = (BackPressureError, GroupBusyError)


class MaskRouter:
    """Ask the primary model; fall back to the fallback tier (U2-Net) when it cannot answer.

    Each request has one deadline, split between the groups: the primary gets its
    `<prefix>_timeout_s` (`rmbg_timeout_s`), then the fallback its own (`u2net_timeout_s`).
    A request whose replica died (or had not loaded, while others of its group have) is
    sent once more to the same group within its share; the proxy's timeout must exceed
    the sum.
    """

    def __init__(
        self,
        handles: dict[str, DeploymentHandle],
        monitor: GroupMonitor,
        retry_after_s: int = 2,
    ) -> None:
        self._handles = handles
        self._monitor = monitor
        self._retry_after_s = retry_after_s
        self._admission = {name: DeadlineAdmission() for name in handles}
        self.config = RoutingConfig()
        self._fallbacks = Counter(
            "bg_removal_fallbacks",
            description="Requests served by U2-Net because RMBG-2.0 could not, by reason.",
            tag_keys=("reason",),
        )

    async def mask(self, rgb: np.ndarray, model: str | None = None) -> MaskOutcome:
        """The mask from tier ``model`` (a request's choice; None: the configured primary),
        else from the fallback tier, with the same deadlines and shedding either way."""
        await self._monitor.ready()
        config = self.config
        model = config.model if model is None else model
        primary, fallback = get_tier(model).label, get_tier(FALLBACK).label
        reason: str | None = None
        if model != FALLBACK:
            reason = self._unavailable_reason(model, config)
            if reason is None:
                try:
                    mask = await self._call(model, rgb, config.timeout_s(model))
                    return MaskOutcome(mask, model)
                except TimeoutError:
                    reason = "timeout"
                except OVERLOADED:
                    reason = "overloaded"
                except Exception as exc:
                    reason = _failure_reason(exc)
                    if reason.startswith("error:") and not isinstance(_cause(exc), ModelError):
                        logger.exception("%s failed unexpectedly", primary)
            if not config.fallback:
                raise NoModelAvailableError(
                    f"{primary} cannot serve ({reason}) and fallback is off "
                    "(BG_REMOVAL_FALLBACK=false)",
                    code="model_unavailable",
                    retry_after_s=self._retry_after_s if _passing(reason) else None,
                )
            logger.warning("falling back to %s: %s", fallback, reason)
            self._fallbacks.inc(tags={"reason": reason.split(":")[0]})
        timeout_s = config.timeout_s(FALLBACK)
        try:
            mask = await self._call(FALLBACK, rgb, timeout_s)
        except TimeoutError as exc:
            raise MaskTimeoutError(
                f"{fallback} did not answer within {timeout_s:g} s"
                + (f" ({primary}: {reason})" if reason else "")
            ) from exc
        except OVERLOADED as exc:
            raise OverloadedError(
                f"{fallback} is at capacity ({exc}): retry after {self._retry_after_s} s",
                retry_after_s=self._retry_after_s,
            ) from exc
        except NoModelAvailableError:
            raise
        except Exception as exc:
            detail = _failure_reason(exc)
            raise NoModelAvailableError(
                f"{fallback} cannot serve ({detail}: {_message(exc)})"
                + (f"; {primary} cannot serve ({reason})" if reason else ""),
                retry_after_s=self._retry_after_s if _passing(detail) else None,
            ) from exc
        return MaskOutcome(mask, FALLBACK, reason)

    def _unavailable_reason(self, model: str, config: RoutingConfig) -> str | None:
        """Why tier ``model`` cannot serve now; `not_deployed` for a tier that is neither
        the configured primary nor the fallback (its group runs no replica in this mode, and
        asking it would start one), which falls back as any other reason does."""
        if model not in (config.model, FALLBACK):
            return "not_deployed"
        return self._monitor.states[model].unavailable_reason()

    async def _call(self, name: str, rgb: np.ndarray, timeout_s: float) -> np.ndarray:
        """The group's mask at the photo's size, within `timeout_s`, one retry on replica loss."""
        state = self._monitor.states[name]
        if name == FALLBACK and (reason := state.unavailable_reason()):
            raise NoModelAvailableError(
                f"{get_tier(name).label} cannot serve ({reason})",
                retry_after_s=self._retry_after_s if _passing(reason) else None,
            )
        admission = self._admission[name]
        now = time.monotonic()
        live = live_replicas(state)
        if not admission.admit(timeout_s, now, live):
            raise GroupBusyError(
                f"{admission.in_flight} requests in flight, the next answer expected in "
                f"{admission.predicted_wait_s(now, live):.1f} s with {live} live replica(s): "
                f"over {admission.share:.0%} of {timeout_s:g} s"
            )
        spec = state.input_spec
        token = admission.started(now)
        served = False
        try:
            # Only what the model needs travels: its input size, not the photo (up to 150 MB).
            small = await asyncio.to_thread(spec.to_input, rgb) if spec is not None else rgb
            # the group's share of the deadline starts when its input is ready
            deadline = time.monotonic() + timeout_s
            mask = await self._predict(name, small, deadline, state, token)
            served = True
        finally:
            admission.finished(
                token, time.monotonic(), served=served, replicas=live_replicas(state)
            )
        height, width = rgb.shape[:2]
        if mask.shape != (height, width):
            if spec is None:  # cannot happen: without a spec the photo went at its own size
                raise RuntimeError(f"{name} returned a {mask.shape} mask for {rgb.shape}")
            mask = await asyncio.to_thread(spec.to_size, mask, height, width)
        return mask

    async def _predict(
        self, name: str, image: np.ndarray, deadline: float, state: GroupState, token: int
    ) -> np.ndarray:
        """One model call within the deadline; once more if its replica was lost."""
        for attempt in (1, 2):
            if deadline - time.monotonic() <= 0:
                raise TimeoutError
            response = self._handles[name].predict.remote(image)
            try:
                return await self._wait(name, response, deadline, state, token)
            except (TimeoutError, GroupBusyError):
                response.cancel()
                raise
            except Exception as exc:
                cause = _cause(exc)
                if isinstance(cause, ModelNotLoadedError):
                    self._monitor.note_load_failure(name, cause.replica_id, cause.code, str(cause))
                if attempt == 1 and _worth_retry(cause, state):
                    logger.warning("%s: %s, asking another replica", name, _failure_reason(exc))
                    continue
                raise
        raise AssertionError("unreachable")

    async def _wait(
        self, name: str, response: Any, deadline: float, state: GroupState, token: int
    ) -> np.ndarray:
        """The response, checked every `SHED_CHECK_S`: when the group loses capacity (a
        replica died, a rolling restart) a request queued behind others that can no longer
        finish by its deadline is answered now (503 with Retry-After, or the fallback)
        instead of with a 504 when the deadline passes."""
        admission = self._admission[name]
        waiter = asyncio.ensure_future(_result(response))
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                done, _ = await asyncio.wait({waiter}, timeout=min(remaining, SHED_CHECK_S))
                if done:
                    return waiter.result()
                live = live_replicas(state)
                if admission.hopeless(token, time.monotonic(), deadline, live):
                    left_s = deadline - time.monotonic()
                    raise GroupBusyError(
                        f"queued behind {admission.in_flight - 1} request(s) with {live} live "
                        f"replica(s): it could not finish within {left_s:.1f} s"
                    )
        finally:
            if not waiter.done():
                waiter.cancel()


async def _result(response: Any) -> np.ndarray:
    return await response


def _worth_retry(cause: BaseException, state: GroupState) -> bool:
    """Replica lost: another one may answer. Not loaded: only if another replica is ready."""
    if isinstance(cause, (ActorDiedError, ActorUnavailableError, RayActorError)):
        return True
    return isinstance(cause, ModelNotLoadedError) and state.ready_replicas > 0


def _passing(reason: str | None) -> bool:
    """Whether a reason is likely to clear by itself soon (worth a Retry-After)."""
    if not reason:
        return False
    return reason in {"no_live_replica", "replica_died", "overloaded", "timeout"} or (
        reason
        in {"load_failed:loading", "load_failed:weights_network", "load_failed:weights_not_found"}
    )


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
