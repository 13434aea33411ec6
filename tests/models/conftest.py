"""Fixtures shared by the model tests."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from tests.support.shared import U2NETP
from tests.support.u2net_parity import RembgMasks, require_real_u2net


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail loudly if anything in a test tries to reach a host: model tests run offline."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a test tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="package")
def u2netp_home(shared_data: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A U2-Net home holding (a copy of) rembg's real u2netp, read by every model test that
    loads u2netp by name, and by rembg for its reference masks; no test writes to it."""
    home = tmp_path_factory.mktemp("u2netp-home")
    shutil.copy(U2NETP, home / "u2netp.onnx")
    return home


@pytest.fixture(scope="package")
def rembg_masks(u2netp_home: Path) -> RembgMasks:
    """rembg's own masks of the shared photos, on the real u2netp and the real u2net: each
    computed once per model, photo and size for all the model tests (test_u2net,
    test_u2net_int8 and test_u2net_selection compare with the same ones)."""
    return RembgMasks({"u2netp": lambda: u2netp_home, "u2net": require_real_u2net})
