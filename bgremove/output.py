"""Writing results so that an interrupted run never leaves a half-written output behind.

A truncated file newer than its input would be skipped by the next (resumed) run, so every
result is written atomically (`models.files`: a hidden temporary beside it, renamed over it).
"""

from __future__ import annotations

from pathlib import Path

from models import files


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` all at once (parents created), or not at all.

    A result is the user's own file, so it gets the permissions their umask gives (0666 less
    the umask) like any file a command writes, not the fixed 0644 of the models' caches.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    files.write_atomic(path, data, mode=None)
