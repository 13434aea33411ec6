"""How the two pytest-xdist workers of `scripts/test.sh` share the tests and the machine.

A pytest plugin (the root conftest names it). One worker takes the tests that start Ray
first, as one unit in order: `tests/cluster` (the drill), then `tests/batch` and
`tests/service` (each starts a local Ray in the test process, one after the other). The
other worker takes the rest (each model test file as a unit: module fixtures made once)
under Linux's SCHED_IDLE: it runs only on CPU time nothing else wants, so it fills the time
the Ray tests leave idle while they wait on replicas, health checks and drills without
slowing their deadlines (the drill's autoscaling and node-loss timings included). Without
xdist, or with one worker, nothing here changes a thing.
"""

from __future__ import annotations

import os

import pytest
from xdist.remote import Producer
from xdist.scheduler import LoadScopeScheduling

#: Test folders one worker runs as one unit, in collection order.
RAY_FOLDERS = ("batch", "cluster", "service")
#: Test folders whose files are units (module fixtures made once): the model tests.
FILE_FOLDERS = ("models",)
#: Niceness of the tests outside the Ray unit where SCHED_IDLE is missing (Ray's workers
#: run at 15).
OTHER_TESTS_NICE = 19
#: The cluster drill's tests: first in the collection, so first in the Ray unit.
CLUSTER_TESTS = "tests/cluster/"


def unit(nodeid: str) -> str:
    """The work unit of a test: "ray" (`RAY_FOLDERS`), its file (`FILE_FOLDERS`), or itself."""
    parts = nodeid.split("/")
    if len(parts) > 2 and parts[1] in RAY_FOLDERS:
        return "ray"
    if len(parts) > 2 and parts[1] in FILE_FOLDERS:
        return nodeid.split("::")[0]
    return nodeid


class FolderScheduling(LoadScopeScheduling):
    """xdist's scope scheduler with `unit` as the scope: the Ray unit (the largest, so the
    first handed out) to one worker whole, the rest to whichever worker is free."""

    def _split_scope(self, nodeid: str) -> str:
        return unit(nodeid)


@pytest.hookimpl(optionalhook=True)  # known only where xdist is loaded
def pytest_xdist_make_scheduler(config: pytest.Config, log: Producer) -> FolderScheduling:
    return FolderScheduling(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The cluster drill's tests first (a stable sort: every other test keeps its place)."""
    items.sort(key=lambda item: not item.nodeid.startswith(CLUSTER_TESTS))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test outside the Ray unit, with two or more workers, runs under SCHED_IDLE (nice 19
    where there is none), from before its fixtures are made (a module's first test makes
    the expensive ones). It stays so: the Ray unit is handed out first, so no Ray test runs
    idle-class; after the unit both workers share what is left."""
    if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) < 2:
        return
    if unit(item.nodeid) == "ray":
        return
    if hasattr(os, "SCHED_IDLE"):
        if os.sched_getscheduler(0) != os.SCHED_IDLE:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        return
    now = os.nice(0)
    if now < OTHER_TESTS_NICE:
        os.nice(OTHER_TESTS_NICE - now)
