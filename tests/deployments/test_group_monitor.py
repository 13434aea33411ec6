"""GroupMonitor's view of a group without a cluster: status polls that go unanswered
because every replica is busy must not make the group look dead; polling stops while no
request comes and the next request is routed on a fresh view.

The handles are stand-ins whose `status` calls answer, fail or hang as the test says; the
service tests (tests/service/test_reliability.py) drive real replicas.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from deployments import group_monitor
from deployments.group_monitor import GroupMonitor, GroupState, live_replicas
from models.registry import U2NET


def _loaded(replica_id: str) -> dict[str, Any]:
    return {"replica_id": replica_id, "loaded": True}


def _group(running: int, seen: dict[str, int]) -> GroupState:
    state = GroupState(running_replicas=running, updated_at=1.0)
    state.replicas = {rid: (_loaded(rid), at) for rid, at in seen.items()}
    return state


def test_an_unanswered_poll_keeps_the_replicas_serve_still_runs() -> None:
    state = _group(running=2, seen={"a": 0, "b": 0})
    state.observe([], poll=100, stale_polls=5, complete=False)
    assert sorted(state.replicas) == ["a", "b"]
    assert live_replicas(state) == 2


def test_an_answered_poll_forgets_replicas_it_no_longer_sees() -> None:
    state = _group(running=1, seen={"a": 0, "b": 0})
    state.observe([_loaded("b")], poll=100, stale_polls=5, complete=True)
    assert sorted(state.replicas) == ["b"]


def test_an_unanswered_poll_forgets_the_oldest_beyond_what_serve_runs() -> None:
    # a replica died and Serve runs one fewer: the one seen longest ago goes
    state = _group(running=2, seen={"old": 1, "a": 50, "b": 60})
    state.observe([], poll=100, stale_polls=5, complete=False)
    assert sorted(state.replicas) == ["a", "b"]


def test_fresh_statuses_are_never_forgotten() -> None:
    # seen 2 polls ago: kept however long ago that was (polling may have been parked)
    state = _group(running=0, seen={"a": 98})
    state.observe([], poll=100, stale_polls=5, complete=True)
    assert list(state.replicas) == ["a"]


class _Status:
    def __init__(self, answers: list[Any]) -> None:
        self._answers = answers

    def remote(self) -> Any:
        answer = self._answers.pop(0)
        if answer is None:  # a busy replica: the call waits past its timeout
            return asyncio.sleep(3600)
        return _now(answer)


async def _now(value: Any) -> Any:
    if isinstance(value, BaseException):
        raise value
    return value


class _Handle:
    def __init__(self, answers: list[Any]) -> None:
        self.status = _Status(answers)


def test_poll_reports_whether_every_call_was_answered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(group_monitor, "STATUS_CALL_TIMEOUT_S", 0.05)

    async def poll(answers: list[Any]) -> tuple[list[dict[str, Any]], bool]:
        monitor = GroupMonitor({U2NET: _Handle(answers)}, interval_s=60)  # type: ignore[dict-item]
        return await monitor._poll(U2NET, running=1)

    assert asyncio.run(poll([_loaded("a"), _loaded("a")])) == ([_loaded("a")] * 2, True)
    assert asyncio.run(poll([_loaded("a"), None])) == ([_loaded("a")], False)
    assert asyncio.run(poll([RuntimeError("backpressure"), None])) == ([], False)


class _Answering:
    """A group whose one replica answers every status call at once."""

    def __init__(self) -> None:
        self.status = self

    def remote(self) -> Any:
        return _now(_loaded("a"))


async def _until(condition: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_polling_parks_without_requests_and_a_request_resumes_it_on_a_fresh_view(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    polls: list[float] = []

    def replica_states() -> dict[str, dict[str, int]]:
        polls.append(time.monotonic())
        return {group_monitor.DEPLOYMENT_NAMES[U2NET]: {"RUNNING": 1}}

    monkeypatch.setattr(group_monitor, "_replica_states", replica_states)

    async def scenario() -> None:
        monitor = GroupMonitor(
            {U2NET: _Answering()},  # type: ignore[dict-item]
            interval_s=0.01,
            idle_after_s=0.1,
        )
        await monitor.ready()  # a request: the first poll, and polling runs
        assert polls and live_replicas(monitor.states[U2NET]) == 1
        await _until(lambda: not monitor._current.is_set())  # no request since: parked
        parked = len(polls)
        await asyncio.sleep(0.3)  # 30 intervals
        assert len(polls) == parked
        asked = time.monotonic()
        await monitor.ready()  # the next request waits for a poll made after it came
        assert len(polls) == parked + 1 and polls[-1] >= asked
        assert monitor.states[U2NET].updated_at >= asked
        assert live_replicas(monitor.states[U2NET]) == 1  # the parked time aged nothing
        await _until(lambda: len(polls) >= parked + 3)  # polling runs again
        # a health check's refresh while parked is fresh enough for the next request
        await _until(lambda: not monitor._current.is_set())
        await monitor.refresh()
        refreshed = len(polls)
        await monitor.ready()
        assert len(polls) == refreshed  # not waited for another poll
        await _until(lambda: len(polls) > refreshed)  # but polling resumed
        monitor._task.cancel()  # type: ignore[union-attr]

    asyncio.run(scenario())
