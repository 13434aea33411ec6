"""Settings of the whole test session."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


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
