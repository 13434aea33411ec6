"""The ingress returns freed image buffers to the system (glibc's mallopt: 2 arenas, buffers
of 1 MiB and more mmapped): without it a soak's ingress kept ~440 MiB freed but not returned
(docs/cluster.md, "Soak"). Applied in a child process: it changes the process it runs in."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_the_ingress_tunes_glibc_malloc() -> None:
    code = "from deployments.ingress import tune_malloc; print(tune_malloc())"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "True", out.stderr[-2000:]
