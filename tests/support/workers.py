"""How the two pytest-xdist workers of `scripts/test.sh` share the tests and the machine.

A pytest plugin (the root conftest names it). One worker takes the tests that start Ray
first, as one unit in order: `tests/cluster` (the drill, alone on the machine), then
`tests/batch` and `tests/service` (each starts a local Ray in the test process, one after
the other). The other worker takes the rest (each model test file as a unit: module
fixtures made once) at nice 19, below the Serve replicas (Ray starts its workers at nice
15): it fills the CPU time the Ray tests leave idle while they wait on replicas, health
checks and drills. Without xdist, or with one worker, nothing here changes a thing.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
from xdist.remote import Producer
from xdist.scheduler import LoadScopeScheduling

from tests.support.http import wait_for

#: Test folders one worker runs as one unit, in collection order.
RAY_FOLDERS = ("batch", "cluster", "service")
#: Test folders whose files are units (module fixtures made once): the model tests.
FILE_FOLDERS = ("models",)
#: Niceness of the tests outside the Ray unit (Ray's workers run at 15).
OTHER_TESTS_NICE = 19
#: The cluster drill's tests: first in the collection, so first in the Ray unit.
CLUSTER_TESTS = "tests/cluster/"
#: The file the drill's fixture writes when it is over (tests/cluster/conftest.py), and how
#: long the other worker waits for it at most (the drill's own limit and its start).
DRILL_DONE = "done"
DRILL_WAIT_S = 600
_drill_waited = pytest.StashKey[bool]()


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


@pytest.fixture(autouse=True)
def share_the_cpu(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> None:
    """A test outside the Ray unit, with two or more workers: none runs beside the cluster
    drill (its autoscaling and node-loss timings are judged, so it gets the machine to
    itself as in a one-process run), and each runs at nice 19. Niceness only goes up and
    the Ray unit is handed out first, so no Ray test runs niced; after the unit both
    workers share the CPU alike."""
    if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) < 2:
        return
    if unit(request.node.nodeid) == "ray":
        return
    if not request.config.stash.get(_drill_waited, False):
        request.config.stash[_drill_waited] = True
        if any(item.nodeid.startswith(CLUSTER_TESTS) for item in request.session.items):
            _wait_for_the_drill(tmp_path_factory.getbasetemp().parent)
    now = os.nice(0)
    if now < OTHER_TESTS_NICE:
        os.nice(OTHER_TESTS_NICE - now)


def _wait_for_the_drill(run_dir: Path) -> None:
    """Until the cluster drill's fixture says it is over (on any worker of this run); past
    `DRILL_WAIT_S` the tests go on, with a warning."""
    try:
        wait_for(lambda: any(run_dir.glob(f"*/cluster-drill*/{DRILL_DONE}")), DRILL_WAIT_S, 0.5)
    except AssertionError:
        warnings.warn(f"the cluster drill was not over after {DRILL_WAIT_S} s", stacklevel=1)
