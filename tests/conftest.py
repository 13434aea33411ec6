"""Settings of the whole test session."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support import shared

#: how the two xdist workers of `scripts/test.sh` share the tests and the CPU
pytest_plugins = ["tests.support.workers"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--require-rmbg",
        action="store_true",
        help="fail, instead of skipping, the tests that need real RMBG-2.0 weights",
    )


@pytest.fixture(scope="session", autouse=True)
def no_settings_file() -> Iterator[None]:
    """Read no `.env` unless a test names one: a developer's own `.env` in the checkout must
    not change what the tests run (Ray's local workers inherit this from the session)."""
    before = os.environ.get("BG_REMOVAL_ENV_FILE")
    os.environ["BG_REMOVAL_ENV_FILE"] = ""
    yield
    if before is None:
        del os.environ["BG_REMOVAL_ENV_FILE"]
    else:
        os.environ["BG_REMOVAL_ENV_FILE"] = before


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No BG_REMOVAL_* or U2NET_HOME from the developer's shell in the settings: only what a
    test sets counts."""
    for var in [v for v in os.environ if v.startswith("BG_REMOVAL_") or v == "U2NET_HOME"]:
        monkeypatch.delenv(var)
    return monkeypatch


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Check ../shared once, before any test runs, when a collected test reads it: a missing
    folder or file is then one usage error saying what is missing and where to get it."""
    if any("shared_data" in item.fixturenames for item in items):
        message = shared.problem()
        if message is not None:
            raise pytest.UsageError(message)


@pytest.fixture(scope="session")
def shared_data() -> None:
    """Requested (usually as `pytest.mark.usefixtures("shared_data")`) by every test that reads
    ../shared: the paths are in tests/support/shared.py; the check runs at collection."""
    message = shared.problem()
    if message is not None:  # only reached where the collection hook did not run
        pytest.fail(message, pytrace=False)
