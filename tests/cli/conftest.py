"""Fixtures of the CLI tests: the real u2netp, real photos, and a folder with bad files.

The in-process model is configured the way an operator would, through the service's
BG_REMOVAL_* settings: u2netp from a private U2NET home (no download), ONNX Runtime pinned so
nothing is timed at load.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.cli import PHOTOS
from tests.support.shared import IMAGES, U2NETP


@pytest.fixture(scope="session")
def u2net_home(shared_data: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("u2net-home")
    shutil.copy(U2NETP, home / "u2netp.onnx")
    return home


@pytest.fixture
def u2netp_env(monkeypatch: pytest.MonkeyPatch, u2net_home: Path) -> Path:
    """Settings for the real u2netp, read by the CLI as the service reads them."""
    for name in ("BG_REMOVAL_MODEL", "BG_REMOVAL_PRESETS_FILE", "BG_REMOVAL_API_KEY", "U2NET_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BG_REMOVAL_U2NET_MODEL", "u2netp")
    monkeypatch.setenv("BG_REMOVAL_U2NET_HOME", str(u2net_home))
    monkeypatch.setenv("BG_REMOVAL_U2NET_ALLOW_DOWNLOAD", "false")
    monkeypatch.setenv("BG_REMOVAL_U2NET_RUNTIME", "onnxruntime")
    monkeypatch.setenv("BG_REMOVAL_U2NET_THREADS", "2")
    monkeypatch.setenv("BG_REMOVAL_U2NET_TUNING_CACHE_DIR", "")
    return u2net_home


@pytest.fixture
def photos(shared_data: None, tmp_path: Path) -> Path:
    """A folder of real photos, a corrupt JPEG, a non-image, and a subfolder with a photo."""
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for name in PHOTOS:
        shutil.copy(IMAGES / name, folder / name)
    shutil.copy(IMAGES / "lamp2_meitu_1.jpg", folder / "sub" / "lamp.jpg")
    (folder / "broken.jpg").write_bytes((IMAGES / "horse.jpg").read_bytes()[:4000])
    (folder / "notes.txt").write_text("not an image\n")
    return folder
