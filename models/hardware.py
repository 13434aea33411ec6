"""Facts about the machine this process runs on, for speed choices made by measurement.

Timings (and so every runtime, precision and thread choice) depend on the CPU, so
benchmarks print its name next to their figures and cached choices are keyed by it; which
runtimes are candidates depends on what is installed (`openvino_available`).
"""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path


def cpu_name() -> str:
    """The CPU model name from /proc/cpuinfo, else what the platform says."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def usable_cpus() -> int:
    """CPUs this process may run on (respects cpusets/taskset, unlike os.cpu_count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def openvino_available() -> bool:
    """Whether the `openvino` package can be imported (runtimes offer it only then)."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True
