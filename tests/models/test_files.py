"""Atomic writes: a reader sees the old file or the new one; one permission rule."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from models.files import (
    DIR_MODE,
    FILE_MODE,
    atomic_path,
    publish,
    remove_stale_temporaries,
    staged_directory,
    write_atomic,
)


@pytest.fixture
def private_umask() -> Iterator[None]:
    """A umask that would make new files private: the rule must not depend on it."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_write_replaces_whole_with_the_rules_permissions(tmp_path: Path, private_umask: None):
    target = tmp_path / "choice.json"
    write_atomic(target, b"old")
    write_atomic(target, "new \N{SNOWMAN}")
    assert target.read_text() == "new \N{SNOWMAN}"
    assert _mode(target) == FILE_MODE == 0o644
    assert os.listdir(tmp_path) == ["choice.json"]


def test_mode_none_leaves_permissions_to_the_umask(tmp_path: Path, private_umask: None):
    target = tmp_path / "cutout.png"
    write_atomic(target, b"png", mode=None)
    assert _mode(target) == 0o600


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "model.onnx"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as temp:
        temp.write_bytes(b"half")
        assert temp.parent == tmp_path and temp.name.startswith(".")
        raise RuntimeError("checksum mismatch")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["model.onnx"]


def test_a_directory_is_published_whole_and_only_once(tmp_path: Path, private_umask: None) -> None:
    entry = tmp_path / "entry"
    with staged_directory(entry) as staged:
        (staged / "model.xml").write_text("graph")
        publish(staged, entry)
    assert (entry / "model.xml").read_text() == "graph"
    assert _mode(entry) == DIR_MODE and _mode(entry / "model.xml") == FILE_MODE
    with staged_directory(entry) as staged:  # another writer, later: the first one is kept
        (staged / "model.xml").write_text("other")
        with pytest.raises(OSError):
            publish(staged, entry)
    assert (entry / "model.xml").read_text() == "graph"
    assert os.listdir(tmp_path) == ["entry"]


def test_only_old_temporaries_of_the_target_are_removed(tmp_path: Path) -> None:
    entry = tmp_path / "entry"
    with staged_directory(entry) as crashed, staged_directory(entry) as running:
        os.utime(crashed, (time.time() - 7200,) * 2)
        other = tmp_path / ".tmp-other-1-abcd"
        other.mkdir()
        os.utime(other, (time.time() - 7200,) * 2)
        remove_stale_temporaries(entry)
        assert not crashed.exists()
        assert running.exists() and other.exists()


def test_a_long_name_gets_a_temporary_that_fits(tmp_path: Path) -> None:
    target = tmp_path / ("\N{CJK UNIFIED IDEOGRAPH-732B}" * 80 + ".png")  # 244 bytes
    write_atomic(target, b"png")
    assert target.read_bytes() == b"png"
