"""What the ingress knows of each model group: a cheap, periodically refreshed view.

`GroupMonitor` polls Serve's replica counts and every replica's `status()` in the background
(on handles of its own, `status_handles`), so that a request never waits on a group known to
be down and health reports without asking a busy replica. Routing (`deployments.routing`)
and health (`deployments.ingress`) read its `GroupState`s.

Polling stops while no request comes: each poll asks Serve's controller for the details of
every app in the cluster, which an idle ingress would otherwise pay for around the clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ray import serve
from ray.serve.context import _get_global_client
from ray.serve.handle import DeploymentHandle

from imaging.resize import ModelInputSpec
from models.registry import TIERS

logger = logging.getLogger("ray.serve")

#: Serve deployment names of the model groups
DEPLOYMENT_NAMES = {name: tier.deployment for name, tier in TIERS.items()}


#: A replica's status not seen in this many polls is dropped (the replica is gone). Counted
#: in polls, not seconds: time while polling is parked (no requests) ages nothing.
STALE_POLLS = 5
#: Most status calls per group and poll: each call reaches one replica, picked by Serve.
MAX_STATUS_CALLS = 8
#: How long a status call may wait for a replica busy with masks, s.
STATUS_CALL_TIMEOUT_S = 5.0


@dataclass
class GroupState:
    """What the ingress last learnt about one model group, from all of its replicas."""

    running_replicas: int = 0
    replica_states: dict[str, int] = field(default_factory=dict)
    #: replica id -> (its last `status()`, the number of the poll that saw it)
    replicas: dict[str, tuple[dict[str, Any], int]] = field(default_factory=dict)
    updated_at: float = 0.0

    @property
    def statuses(self) -> list[dict[str, Any]]:
        return [status for status, _ in self.replicas.values()]

    @property
    def ready_replicas(self) -> int:
        return sum(1 for status in self.statuses if status.get("loaded"))

    @property
    def replica_status(self) -> dict[str, Any] | None:
        """One replica's report: a ready one where there is one (for health's summary)."""
        statuses = self.statuses
        ready = [s for s in statuses if s.get("loaded")]
        return (ready or statuses or [None])[0]

    @property
    def load_error(self) -> dict[str, str] | None:
        """The load error when no known replica of the group is ready."""
        if not self.replicas or self.ready_replicas:
            return None
        status = self.replica_status or {}
        return status.get("error") or {"code": "loading", "message": "the model is loading"}

    @property
    def input_spec(self) -> ModelInputSpec | None:
        spec = (self.replica_status or {}).get("input_spec")
        return ModelInputSpec.from_dict(spec) if spec else None

    def unavailable_reason(self) -> str | None:
        """Why this group cannot serve now, as a short code; None when it can."""
        if self.updated_at and self.running_replicas == 0:
            return "no_live_replica"
        error = self.load_error
        if error is not None:
            return f"load_failed:{error.get('code', 'unknown')}"
        return None

    def observe(
        self,
        statuses: list[dict[str, Any]],
        poll: int,
        stale_polls: int = STALE_POLLS,
        complete: bool = True,
    ) -> None:
        """Record the answers of poll number ``poll``; forget replicas not seen in the last
        ``stale_polls`` polls.

        A poll with unanswered calls (``complete=False``: every replica busy with masks
        past the call's timeout) says nothing about who is gone, so then a replica is only
        forgotten while more are known than Serve runs: a saturated group keeps its live
        count instead of being taken for dead (and shed) because it is busy.
        """
        for status in statuses:
            self.replicas[str(status.get("replica_id"))] = (status, poll)
        oldest_first = sorted(self.replicas.items(), key=lambda item: item[1][1])
        for replica_id, (_, seen) in oldest_first:
            if poll - seen <= stale_polls:
                break
            if complete or len(self.replicas) > self.running_replicas:
                del self.replicas[replica_id]


def live_replicas(state: GroupState) -> int:
    """Replicas that can take a mask now: running in Serve's view and loaded in theirs."""
    return min(state.running_replicas, state.ready_replicas)


def status_handles(groups: Mapping[str, DeploymentHandle]) -> dict[str, DeploymentHandle]:
    """New handles to the same groups, for `GroupMonitor`'s polls.

    Each handle has its own router and its own queue bound (`max_queued_requests`): on
    the masks' handle a status call waiting for a busy replica would hold a place in
    the masks' queue, and a mask would be refused (503) for it.
    """
    return {
        name: serve.get_deployment_handle(handle.deployment_name, handle.app_name)
        for name, handle in groups.items()
    }


class GroupMonitor:
    """Polls Serve's status and every replica's `status()` in the background while requests
    come: after ``idle_after_s`` without one it stops, and the next request waits (briefly)
    for a fresh view before it is routed. Health refreshes on its own (`refresh`).

    Give it its own handles (`status_handles`), not the ones masks travel on.
    """

    def __init__(
        self,
        handles: Mapping[str, DeploymentHandle],
        interval_s: float,
        idle_after_s: float = 60.0,
    ) -> None:
        self._handles = handles
        self._interval_s = interval_s
        self._idle_after_s = idle_after_s
        self.states = {name: GroupState() for name in handles}
        self._task: asyncio.Task[None] | None = None
        self._refresh_lock = asyncio.Lock()
        self._polls = 0
        self._refreshed_at = float("-inf")
        self._last_request = time.monotonic()
        #: set while the background polling keeps the view current; clear before the first
        #: poll and while polling is parked
        self._current = asyncio.Event()
        self._wake = asyncio.Event()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def ready(self, timeout_s: float = 5.0) -> None:
        """A request is about to be routed: resume polling if it was parked, and wait
        (briefly) for a view no older than a poll interval, so that it is routed on facts."""
        self._last_request = time.monotonic()
        self.start()
        if self._current.is_set():
            return
        self._wake.set()
        if time.monotonic() - self._refreshed_at <= self._interval_s:
            return  # a health check has just refreshed it
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._current.wait(), timeout_s)

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
            except RuntimeError as exc:  # the replica is shutting down
                logger.debug("status polling stopped: %s", exc)
                return
            except Exception:  # keep polling; the next round may succeed
                logger.exception("model group status refresh failed")
            self._current.set()
            if time.monotonic() - self._last_request < self._idle_after_s:
                await asyncio.sleep(self._interval_s)
                continue
            # no request for idle_after_s: park until one comes (`ready` wakes it)
            self._current.clear()
            self._wake.clear()
            await self._wake.wait()

    async def refresh(self) -> None:
        async with self._refresh_lock:
            counts = await asyncio.to_thread(_replica_states)
            now = time.monotonic()
            self._polls += 1
            for name, state in self.states.items():
                states = counts.get(DEPLOYMENT_NAMES[name], {})
                state.replica_states = states
                state.running_replicas = states.get("RUNNING", 0)
                state.updated_at = now
                statuses, complete = await self._poll(name, state.running_replicas)
                state.observe(statuses, self._polls, STALE_POLLS, complete)
            self._refreshed_at = time.monotonic()

    async def _poll(self, name: str, running: int) -> tuple[list[dict[str, Any]], bool]:
        """Status of (very likely) every replica: Serve spreads concurrent calls over them.
        Also whether every call was answered."""
        if not running:
            return [], True
        calls = [
            asyncio.wait_for(self._handles[name].status.remote(), timeout=STATUS_CALL_TIMEOUT_S)
            for _ in range(min(2 * running, MAX_STATUS_CALLS))
        ]
        results = await asyncio.gather(*calls, return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            logger.warning("status of %s: %d call(s) failed: %r", name, len(failures), failures[0])
        return [r for r in results if isinstance(r, dict)], not failures

    def note_load_failure(self, name: str, replica_id: str | None, code: str, message: str) -> None:
        """A request met a replica that failed to load: remember it until the next poll."""
        state = self.states[name]
        key = replica_id or "unknown"
        status, seen = state.replicas.get(key, ({"replica_id": key}, self._polls))
        state.replicas[key] = (
            {**status, "loaded": False, "error": {"code": code, "message": message}},
            seen,
        )


def _replica_states() -> dict[str, dict[str, int]]:
    """Replica counts by state for each deployment of this app (blocking call).

    Counted from the controller's details in the shape Serve's REST API returns them
    (`applications.<app>.deployments.<name>.replicas[].state`), the counts `serve.status()`
    gives, without its parse of every app's details into pydantic models: that parse was
    nearly all of a poll's cost, 156-236 ms of the ingress's CPU with 8 apps of 3 deployments
    against about 1 ms for the dict (2-core EPYC, Ray 2.60), so 15-24% of a core per busy
    ingress at a 1 s interval.
    """
    app_name = serve.get_replica_context().app_name
    app = _get_global_client().get_serve_details().get("applications", {}).get(app_name)
    if app is None:
        return {}
    return {
        name: dict(Counter(str(getattr(r["state"], "value", r["state"])) for r in d["replicas"]))
        for name, d in app.get("deployments", {}).items()
    }
