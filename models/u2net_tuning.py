"""Choose U2-Net's runtime, precision and threads by timing them where the service runs.

Why measure: the same setting changes sign from one CPU to the next. OpenVINO
bf16 ran rembg's u2net 1.9x faster than f32 on an AMD EPYC with avx512_bf16
and 1.7x slower on an Intel Xeon with avx512_bf16 but no AMX; which of ONNX
Runtime and OpenVINO f32 wins, and with how many threads, varies too. So the
predictor builds every candidate known to keep rembg's masks within tolerance
(:func:`plan_candidates`), times each on a few warm runs and keeps the fastest
(:func:`select_fastest`).
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np

from models.errors import ModelError

log = logging.getLogger("models.u2net")

#: untimed runs per candidate first (lazy kernel setup, caches), then timed runs (median)
WARMUP_RUNS = 1
TIMED_RUNS = 3
#: half the threads is also tried from this many CPUs (fewer threads can win on
#: small convolutions; below 4 CPUs it is not worth the load time)
HALF_THREADS_FROM = 4

S = TypeVar("S")


@dataclass(frozen=True)
class Candidate:
    """One way to run the model."""

    runtime: str
    precision: str
    threads: int

    @property
    def label(self) -> str:
        """Readable key of timings, e.g. ``openvino/f32/2t``."""
        return f"{self.runtime}/{self.precision}/{self.threads}t"


@dataclass(frozen=True)
class Plan:
    """The candidates to build, and why others were left out (keyed by label prefix)."""

    candidates: tuple[Candidate, ...]
    excluded: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Selected(Generic[S]):
    """The fastest candidate, its built session, and what the measurement saw."""

    candidate: Candidate
    session: S
    timings_ms: dict[str, float]
    failed: dict[str, str]


def cpu_has_native_bf16() -> bool:
    """OpenVINO's word on whether this CPU computes in bf16 (else a bf16 hint runs f32)."""
    import openvino as ov

    try:
        caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception as exc:  # a plugin that cannot answer cannot be trusted with bf16
        log.warning("OpenVINO could not report CPU capabilities (%s): no bf16 candidate", exc)
        return False
    return "BF16" in caps


def thread_options(threads: int | None, cpus: int) -> list[int]:
    """The pinned count, else all ``cpus`` and, from HALF_THREADS_FROM CPUs, half of them."""
    if threads is not None:
        return [threads]
    if cpus >= HALF_THREADS_FROM:
        return [cpus, cpus // 2]
    return [cpus]


def bf16_exclusion(
    *, model_name: str, rembg_file: bool, resize: str, cpu_bf16: Callable[[], bool]
) -> str | None:
    """Why OpenVINO bf16 is not a candidate, or None when it is.

    bf16 is checked within rembg's tolerance only for rembg's own ``u2net``
    file with exact resizing (worst mean |diff| 0.91; 1.05 with fast
    resizing); u2netp in bf16 is far outside (mean |diff| 5.5). On a CPU
    without native bf16 OpenVINO would run f32 anyway.
    """
    reasons = []
    if not cpu_bf16():
        reasons.append("CPU has no native bf16")
    if model_name != "u2net":
        reasons.append(f"{model_name}: bf16 is within rembg's tolerance only for u2net")
    elif not rembg_file:
        reasons.append("operator's own file: bf16 is checked only on rembg's u2net file")
    if resize == "fast":
        reasons.append("resize='fast': bf16 stays within tolerance only with exact resizing")
    return "; ".join(reasons) or None


def plan_candidates(
    *,
    model_name: str,
    rembg_file: bool,
    runtime: str,
    precision: str,
    threads: int | None,
    resize: str,
    cpus: int,
    openvino_installed: bool,
    cpu_bf16: Callable[[], bool] = cpu_has_native_bf16,
) -> Plan:
    """Every (runtime, precision, threads) the caller's pins allow and the masks tolerate.

    ``runtime``/``precision``/``resize`` may be ``"auto"`` and ``threads`` None;
    anything else is a pin and restricts the candidates. bf16 is offered only
    when precision is ``auto`` and :func:`bf16_exclusion` finds nothing; a
    pinned ``bf16`` is the caller's call. ``cpu_bf16`` is asked only when it matters.
    """
    excluded: dict[str, str] = {}
    if runtime == "auto":
        runtimes = ["onnxruntime"]
        if openvino_installed:
            runtimes.append("openvino")
        else:
            excluded["openvino"] = "openvino is not installed"
    else:
        runtimes = [runtime]
    if precision == "bf16":
        runtimes = [r for r in runtimes if r == "openvino"]
    counts = thread_options(threads, cpus)
    if threads is None and len(counts) == 1:
        excluded["threads"] = f"{cpus} CPUs: half the threads is tried from {HALF_THREADS_FROM}"

    candidates: list[Candidate] = []
    for rt in runtimes:
        if precision != "auto":
            precisions = [precision]
        elif rt == "openvino":
            precisions = ["f32"]
            why_not = bf16_exclusion(
                model_name=model_name, rembg_file=rembg_file, resize=resize, cpu_bf16=cpu_bf16
            )
            if why_not is None:
                precisions.append("bf16")
            else:
                excluded["openvino/bf16"] = why_not
        else:
            precisions = ["f32"]
        candidates += [Candidate(rt, p, n) for n in counts for p in precisions]
    return Plan(tuple(candidates), excluded)


def time_runs(
    run_once: Callable[[], object],
    *,
    warmup_runs: int = WARMUP_RUNS,
    timed_runs: int = TIMED_RUNS,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Median milliseconds of ``timed_runs`` calls after ``warmup_runs`` untimed ones."""
    for _ in range(warmup_runs):
        run_once()
    times = []
    for _ in range(timed_runs):
        start = clock()
        run_once()
        times.append((clock() - start) * 1000.0)
    return statistics.median(times)


def timing_input(size: tuple[int, int]) -> np.ndarray:
    """A fixed (1, 3, H, W) input with the spread of normalised photos; ``size`` is (W, H).

    Not zeros: a runtime may take shortcuts on constant data.
    """
    w, h = size
    return np.random.default_rng(0).standard_normal((1, 3, h, w), dtype=np.float32)


def select_fastest(
    candidates: Sequence[Candidate],
    build: Callable[[Candidate], tuple[S, Callable[[], object]]],
    *,
    measure: Callable[[Callable[[], object]], float] = time_runs,
) -> Selected[S]:
    """Build and time each candidate in turn, keeping only the fastest so far alive.

    ``build`` returns the session and a call that runs it once. A candidate that
    fails to build or run (a ModelError) is dropped with its reason, so one
    runtime's bug does not take the replica down; if all fail, the first error is
    raised. At most two sessions are alive at any time.
    """
    best: tuple[Candidate, S, float] | None = None
    timings: dict[str, float] = {}
    failed: dict[str, str] = {}
    first_error: ModelError | None = None
    for candidate in candidates:
        try:
            session, run_once = build(candidate)
            ms = measure(run_once)
        except ModelError as exc:
            log.warning("U2-Net candidate %s failed: %s", candidate.label, exc)
            failed[candidate.label] = f"failed: {exc.code}: {exc}"
            first_error = first_error or exc
            continue
        timings[candidate.label] = round(ms, 1)
        if best is None or ms < best[2]:
            best = (candidate, session, ms)
        del session, run_once  # a slower session is released before the next one is built
    if best is None:
        if first_error is None:
            raise ValueError("no U2-Net candidate to choose from")
        raise first_error
    return Selected(best[0], best[1], timings, failed)
