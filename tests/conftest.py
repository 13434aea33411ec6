"""Settings of the whole test session."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


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
