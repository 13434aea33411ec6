"""MaskRouter without a cluster: a queued request that can no longer finish is answered early.

The model group is a stand-in handle whose calls only finish when the test says so (the
routing logic is what is under test; the service tests drive real replicas).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest

from deployments import routing
from deployments.errors import OverloadedError
from deployments.group_monitor import GroupMonitor
from deployments.routing import GroupBusyError, MaskRouter, RoutingConfig
from models.registry import RMBG, U2NET


class _Pending:
    """A DeploymentResponse that completes when `finish` is called."""

    def __init__(self) -> None:
        self.future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self.cancelled = False

    def __await__(self) -> Any:
        return self.future.__await__()

    def cancel(self) -> None:
        self.cancelled = True
        if not self.future.done():
            self.future.cancel()


class _Method:
    def __init__(self) -> None:
        self.calls: list[_Pending] = []

    def remote(self, image: np.ndarray) -> _Pending:
        self.calls.append(_Pending())
        return self.calls[-1]


class _Handle:
    def __init__(self) -> None:
        self.predict = _Method()


def _router(live: int) -> tuple[MaskRouter, _Handle]:
    handles = {RMBG: _Handle(), U2NET: _Handle()}
    monitor = GroupMonitor(handles, interval_s=60)  # type: ignore[arg-type]
    monitor._current.set()  # no polling: the test sets the states
    for state in monitor.states.values():
        state.updated_at = time.monotonic()
    state = monitor.states[U2NET]
    state.running_replicas = live
    for i in range(live):
        state.replicas[f"r{i}"] = ({"replica_id": f"r{i}", "loaded": True}, 0)
    router = MaskRouter(handles, monitor, retry_after_s=3)  # type: ignore[arg-type]
    router.config = RoutingConfig.from_user_config(
        {"model": U2NET, "fallback": False, "u2net_timeout_s": 3.0}
    )
    return router, handles[U2NET]


def test_a_queued_request_is_shed_when_the_group_loses_replicas(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(routing, "SHED_CHECK_S", 0.1)
    asyncio.run(_shed_when_the_group_loses_replicas())


async def _shed_when_the_group_loses_replicas() -> None:
    router, handle = _router(live=2)
    admission = router._admission[U2NET]
    admission.replica_interval_s = 0.5  # measured: one replica answers every 0.5 s
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    tasks = [asyncio.create_task(router.mask(image)) for _ in range(4)]
    await asyncio.sleep(0.2)
    # 0.25 s apart with 2 replicas: the 4th is predicted at 1 s, within half of 3 s
    assert len(handle.predict.calls) == 4
    # both replicas go (a kill during a rolling restart): nothing is served any more
    router._monitor.states[U2NET].running_replicas = 0
    done, pending = await asyncio.wait(tasks, timeout=2.6)
    # the queued ones were answered 503 as soon as they could not finish, before the 3 s
    # deadline would have made them 504s
    shed = [t for t in done if isinstance(t.exception(), OverloadedError)]
    assert len(shed) == 3, [t.exception() for t in done]
    assert all(t.exception().retry_after_s == 3 for t in shed)
    cause = shed[0].exception().__cause__
    assert isinstance(cause, GroupBusyError) and "could not finish" in str(cause)
    assert sum(call.cancelled for call in handle.predict.calls) == 3
    # the front request (likely on a replica) is kept and answered when its mask comes
    (front,) = pending
    first = next(c for c in handle.predict.calls if not c.cancelled)
    first.future.set_result(np.full((8, 8), 255, dtype=np.uint8))
    outcome = await front
    assert outcome.model == U2NET and outcome.mask.shape == (8, 8)


def test_nothing_is_shed_while_the_group_keeps_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(routing, "SHED_CHECK_S", 0.1)
    asyncio.run(_nothing_shed_while_the_group_keeps_up())


async def _nothing_shed_while_the_group_keeps_up() -> None:
    router, handle = _router(live=2)
    router._admission[U2NET].replica_interval_s = 0.5
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    tasks = [asyncio.create_task(router.mask(image)) for _ in range(4)]
    await asyncio.sleep(0.8)  # several checks: the last is predicted at 0.8 + 1 s < 3 s
    assert not any(t.done() for t in tasks)
    for call in handle.predict.calls:
        call.future.set_result(np.zeros((8, 8), dtype=np.uint8))
    outcomes = await asyncio.gather(*tasks)
    assert [o.model for o in outcomes] == [U2NET] * 4
    assert not any(call.cancelled for call in handle.predict.calls)
