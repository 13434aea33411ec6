"""Writing files so that a reader sees the old file or the new one, never half of one.

Replicas start while others write what they read (converted models, measured choices, the
INT8 model and its report), and a resumed CLI run would skip a truncated output. So a file
is written under a hidden temporary name beside its target (same filesystem: the rename is
atomic), flushed to disk, and renamed over the target; a failure removes the temporary.

Permissions, one rule: a published file is 0o644 and a published directory 0o755
(world-readable like any cache: other replicas, other users and rembg read them), whatever
the umask and unlike `tempfile.mkstemp`'s private 0o600. A caller with a reason of its own
passes ``mode=None`` (0o666 less the umask, as `open` creates files) and says why.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

FILE_MODE = 0o644
DIR_MODE = 0o755
#: temporaries start with this, then (part of) their target's name
_TEMP_PREFIX = ".tmp-"
#: bytes of the target's name kept, so that the temporary's stays within the 255 allowed
_NAME_BYTES = 100


def _temp_stem(path: Path) -> str:
    return f"{_TEMP_PREFIX}{os.fsdecode(os.fsencode(path.name)[:_NAME_BYTES])}-"


def _temp_beside(path: Path) -> Path:
    """A fresh hidden name in `path`'s directory; the pid says whose it is."""
    return path.with_name(f"{_temp_stem(path)}{os.getpid()}-{secrets.token_hex(4)}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _flush(path: Path, mode: int | None) -> None:
    """fsync the file's data and give it `mode` (None: keep what it was created with)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    if mode is not None:
        path.chmod(mode)


def publish(staged: Path, path: Path, *, mode: int | None = FILE_MODE) -> None:
    """Make the finished temporary `staged` (a file, or a directory of files) be `path`.

    Its data is flushed to disk first, so a crash cannot leave `path` empty. A directory's
    files get `mode` and the directory `DIR_MODE` (with ``mode=None``, what they were created
    with); its rename raises OSError where `path` is already a directory that is not empty
    (another writer published first).
    """
    if staged.is_dir():
        for item in staged.rglob("*"):
            if item.is_file():
                _flush(item, mode)
        if mode is not None:
            staged.chmod(DIR_MODE)
        staged.rename(path)
        return
    _flush(staged, mode)
    os.replace(staged, path)


@contextlib.contextmanager
def atomic_path(path: Path, *, mode: int | None = FILE_MODE) -> Iterator[Path]:
    """A temporary path beside `path` to write in any way; published as `path` when the
    block ends without an error, removed when it raises."""
    temp = _temp_beside(path)
    try:
        yield temp
        publish(temp, path, mode=mode)
    except BaseException:
        _remove(temp)
        raise


def write_atomic(path: Path, data: bytes | str, *, mode: int | None = FILE_MODE) -> None:
    """Write `data` (text as UTF-8) to `path` all at once, or not at all; OSError if not."""
    with atomic_path(path, mode=mode) as temp:
        temp.write_bytes(data.encode() if isinstance(data, str) else data)


@contextlib.contextmanager
def staged_directory(path: Path) -> Iterator[Path]:
    """An empty hidden directory beside `path`, to fill and then `publish` (as `path`, or
    file by file); removed at the end if it is still there (an error, or another writer
    published first)."""
    staged = _temp_beside(path)
    staged.mkdir()
    try:
        yield staged
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def remove_stale_temporaries(path: Path, max_age_s: float = 3600.0) -> None:
    """Delete the temporaries of `path` that writers which crashed left behind.

    Only those older than `max_age_s`: a younger one may be another writer's, still going.
    """
    now = time.time()
    for temp in path.parent.glob(glob.escape(_temp_stem(path)) + "*"):
        with contextlib.suppress(OSError):
            if now - temp.lstat().st_mtime > max_age_s:
                _remove(temp)
