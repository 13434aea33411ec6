"""Writing results so that an interrupted run never leaves a half-written output behind.

A truncated file newer than its input would be skipped by the next (resumed) run, so every
result is written to a hidden temporary file beside its target and renamed over it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

#: prefix of the temporary files (hidden: folder scans skip names starting with a dot)
TEMP_PREFIX = ".bgremove-"


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` all at once (parents created), or not at all.

    The file gets the usual permissions (0666 less the umask), unlike `tempfile.mkstemp`'s
    private 0600.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.parent / f"{TEMP_PREFIX}{secrets.token_hex(8)}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
