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

CPUINFO = Path("/proc/cpuinfo")

#: Features that decide which runtime and precision is fastest here (AVX2 only: f32 or INT8;
#: native bf16: bf16; AMX: bf16 and INT8 on tiles, 4-5x f32 for u2net).
DECIDING_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def _cpuinfo_fields(cpuinfo: Path) -> dict[str, str]:
    """The first processor's fields in /proc/cpuinfo ({} where unreadable)."""
    fields: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in cpuinfo.read_text().splitlines():
            if not line.strip():
                break  # the first processor's block ends here
            key, sep, value = line.partition(":")
            if sep:
                fields.setdefault(key.strip(), value.strip())
    return fields


def _name(fields: dict[str, str]) -> str:
    return fields.get("model name") or platform.processor() or platform.machine() or "unknown"


def _flags(fields: dict[str, str]) -> frozenset[str] | None:
    return None if "flags" not in fields else frozenset(fields["flags"].split())


def cpu_name(cpuinfo: Path = CPUINFO) -> str:
    """The CPU model name from /proc/cpuinfo, else what the platform says."""
    return _name(_cpuinfo_fields(cpuinfo))


def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str] | None:
    """The CPU's feature flags from /proc/cpuinfo, None where unreadable."""
    return _flags(_cpuinfo_fields(cpuinfo))


def cpu_description(cpuinfo: Path = CPUINFO) -> str:
    """`cpu_name` with family, model and the deciding features, for benchmark output: under
    a hypervisor the name is often only "Intel(R) Xeon(R) Processor", which says nothing of
    AVX-512, bf16 or AMX."""
    fields = _cpuinfo_fields(cpuinfo)
    parts = []
    if "cpu family" in fields and "model" in fields:
        parts.append(f"family {fields['cpu family']} model {fields['model']}")
    flags = _flags(fields)
    if flags is not None:
        parts.append(" ".join(f for f in DECIDING_FLAGS if f in flags) or "no AVX2")
    return _name(fields) + (f" ({'; '.join(parts)})" if parts else "")


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
