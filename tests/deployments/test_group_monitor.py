"""GroupMonitor's view of a group without a cluster: status polls that go unanswered
because every replica is busy must not make the group look dead.

The handles are stand-ins whose `status` calls answer, fail or hang as the test says; the
service tests (tests/service/test_reliability.py) drive real replicas.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from deployments import group_monitor
from deployments.group_monitor import GroupMonitor, GroupState, live_replicas
from models.registry import U2NET


def _loaded(replica_id: str) -> dict[str, Any]:
    return {"replica_id": replica_id, "loaded": True}


def _group(running: int, seen: dict[str, float]) -> GroupState:
    state = GroupState(running_replicas=running, updated_at=1.0)
    state.replicas = {rid: (_loaded(rid), at) for rid, at in seen.items()}
    return state


def test_an_unanswered_poll_keeps_the_replicas_serve_still_runs() -> None:
    state = _group(running=2, seen={"a": 0.0, "b": 0.0})
    state.observe([], now=100.0, stale_after_s=5.0, complete=False)
    assert sorted(state.replicas) == ["a", "b"]
    assert live_replicas(state) == 2


def test_an_answered_poll_forgets_replicas_it_no_longer_sees() -> None:
    state = _group(running=1, seen={"a": 0.0, "b": 0.0})
    state.observe([_loaded("b")], now=100.0, stale_after_s=5.0, complete=True)
    assert sorted(state.replicas) == ["b"]


def test_an_unanswered_poll_forgets_the_oldest_beyond_what_serve_runs() -> None:
    # a replica died and Serve runs one fewer: the one seen longest ago goes
    state = _group(running=2, seen={"old": 1.0, "a": 50.0, "b": 60.0})
    state.observe([], now=100.0, stale_after_s=5.0, complete=False)
    assert sorted(state.replicas) == ["a", "b"]


def test_fresh_statuses_are_never_forgotten() -> None:
    state = _group(running=0, seen={"a": 98.0})
    state.observe([], now=100.0, stale_after_s=5.0, complete=True)
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
