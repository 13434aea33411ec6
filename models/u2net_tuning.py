"""Choose U2-Net's runtime, precision and threads by timing them where the service runs.

Why measure: the same setting changes sign from one CPU to the next. OpenVINO
bf16 ran rembg's u2net 1.9x faster than f32 on an AMD EPYC with avx512_bf16
and 1.7x slower on an Intel Xeon with avx512_bf16 but no AMX; which of ONNX
Runtime and OpenVINO f32 wins, and with how many threads, varies too. So the
predictor builds every candidate known to keep rembg's masks within tolerance
(:func:`plan_candidates`), times each on a few warm runs and keeps the fastest
(:func:`select_fastest`).

Why cache: that timing costs seconds of every core at each replica start, and
restarts come under load (after a crash, in a rolling update). The timings
are a property of the CPU, the usable CPUs and threads, the model file, the
runtime versions and the candidate set, so a measured choice is recorded on
disk under exactly that key (:func:`selection_key`) and a later start with the
same key loads the recorded choice without timing (:func:`select_cached`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

import numpy as np

from models.errors import ModelError
from models.files import write_atomic
from models.hardware import CPUINFO, cpu_flags, cpu_name

log = logging.getLogger("models.u2net")

#: untimed runs per candidate first (lazy kernel setup, caches), then timed runs (median)
WARMUP_RUNS = 1
TIMED_RUNS = 3
#: half the threads is also tried from this many CPUs (fewer threads can win on
#: small convolutions; below 4 CPUs it is not worth the load time)
HALF_THREADS_FROM = 4
#: layout of a cached selection record and its key; bump it and older records are ignored
CACHE_SCHEMA = 1

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
    """The fastest candidate, its built session, and what the measurement saw.

    ``source`` is ``"cached"`` when the choice and timings were read from
    ``cache_file`` instead of measured; ``cache_file`` is also set when a
    measured choice was recorded there.
    """

    candidate: Candidate
    session: S
    timings_ms: dict[str, float]
    failed: dict[str, str]
    source: Literal["measured", "cached"] = "measured"
    cache_file: Path | None = None


@dataclass(frozen=True)
class SelectionCache:
    """Where a measured choice is recorded, and the key it is valid for."""

    path: Path
    key: dict[str, Any]


def cpu_has_native_bf16() -> bool:
    """OpenVINO's word on whether this CPU computes in bf16 (else a bf16 hint runs f32)."""
    import openvino as ov

    try:
        caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception as exc:  # a plugin that cannot answer cannot be trusted with bf16
        log.warning("OpenVINO could not report CPU capabilities (%s): no bf16 candidate", exc)
        return False
    return "BF16" in caps


def openvino_cpu_config(threads: int, precision: str) -> dict[str, Any]:
    """The CPU plugin's settings for U2-Net: one latency stream on `threads` cores."""
    return {
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": "1",
        "INFERENCE_NUM_THREADS": str(threads),
        "INFERENCE_PRECISION_HINT": precision,
        # OpenVINO pins its threads to the first cores by default, so two replicas or
        # actors on one node share them: two 1-thread u2netp instances ran 2.1x slower
        # each pinned, at full speed unpinned (2-core EPYC); alone, no measurable cost.
        "ENABLE_CPU_PINNING": False,
    }


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
    int8_exclusion: str | None = "no INT8 model",
) -> Plan:
    """Every (runtime, precision, threads) the caller's pins allow and the masks tolerate.

    ``runtime``/``precision``/``resize`` may be ``"auto"`` and ``threads`` None;
    anything else is a pin and restricts the candidates. bf16 is offered only
    when precision is ``auto`` and :func:`bf16_exclusion` finds nothing; a
    pinned ``bf16`` is the caller's call. ``cpu_bf16`` is asked only when it matters.
    OpenVINO INT8 is offered (precision ``auto`` or ``int8``) when ``int8_exclusion``
    is None: an INT8 model checked within tolerance on this CPU (``models.u2net_int8``).
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
    if precision in ("bf16", "int8"):
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
            if int8_exclusion is None:
                precisions.append("int8")
            else:
                excluded["openvino/int8"] = int8_exclusion
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
    turn: AbstractContextManager[object] | None = None,
) -> float:
    """Median milliseconds of ``timed_runs`` calls after ``warmup_runs`` untimed ones.

    ``turn`` is entered around each call, outside the clock: a lock the runs share with
    requests in flight is waited for, not timed."""
    turn = turn if turn is not None else nullcontext()
    for _ in range(warmup_runs):
        with turn:
            run_once()
    times = []
    for _ in range(timed_runs):
        with turn:
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


# --- the selection cache -----------------------------------------------------------------


def cpu_flags_digest(cpuinfo: Path = CPUINFO) -> str | None:
    """sha256 of the CPU's feature flags, None where unreadable.

    The model name alone is not enough: a hypervisor or a microcode update can
    hide features (avx512_bf16, amx) that change which candidate wins.
    """
    flags = cpu_flags(cpuinfo)
    return None if flags is None else hashlib.sha256(" ".join(sorted(flags)).encode()).hexdigest()


def package_version(name: str) -> str | None:
    """An installed distribution's version, None if it is not installed."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def model_identity(path: Path, md5: str | None) -> dict[str, Any]:
    """Size and content hash of the model file: the MD5 already checked if there is one.

    Only an operator's own file has none; it is hashed here (sha256). Size and
    mtime are not an identity: a copied or re-exported file can keep both.
    """
    if md5 is not None:
        return {"size": path.stat().st_size, "md5": md5}
    with path.open("rb") as f:
        sha256 = hashlib.file_digest(f, "sha256").hexdigest()
    return {"size": path.stat().st_size, "sha256": sha256}


def selection_key(
    *, model: Mapping[str, Any], candidates: Sequence[Candidate], cpus: int, threads: int | None
) -> dict[str, Any]:
    """Everything a measured choice depends on; a record is reused only on an exact match."""
    return {
        "schema": CACHE_SCHEMA,
        "cpu": cpu_name(),
        "cpu_flags_sha256": cpu_flags_digest(),
        "cpus": cpus,
        "threads": threads,
        "model": dict(model),
        "onnxruntime": package_version("onnxruntime"),
        "openvino": package_version("openvino"),
        "candidates": [c.label for c in candidates],
    }


def selection_cache(cache_dir: str | os.PathLike[str], key: dict[str, Any]) -> SelectionCache:
    """The record file for ``key``: one file per key, so alternating configs do not evict."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return SelectionCache(Path(cache_dir).expanduser() / f"u2net-{digest}.json", key)


def read_choice(cache: SelectionCache) -> tuple[Candidate, dict[str, float]] | None:
    """The recorded (choice, timings) for the cache's key, or None: then measure.

    A missing file is the normal first start; an unreadable, corrupt or
    foreign record is logged and ignored (the next measurement replaces it).
    """
    try:
        record = json.loads(cache.path.read_text())
        if record["key"] != cache.key:
            raise ValueError("the record is for another key")
        chosen = record["chosen"]
        candidate = Candidate(
            str(chosen["runtime"]), str(chosen["precision"]), int(chosen["threads"])
        )
        timings = {str(label): float(ms) for label, ms in record["timings_ms"].items()}
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("ignoring U2-Net tuning cache %s (%s): measuring again", cache.path, exc)
        return None
    return candidate, timings


def write_choice(cache: SelectionCache, candidate: Candidate, timings_ms: dict[str, float]) -> bool:
    """Record a measured choice; False (logged) where the directory is not writable.

    Written atomically (`models.files`), so a replica starting beside this one
    reads the old record or the new one, never half of one.
    """
    record = {
        "key": cache.key,
        "chosen": asdict(candidate),
        "timings_ms": timings_ms,
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        cache.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(cache.path, json.dumps(record, indent=2, sort_keys=True))
    except OSError as exc:
        log.warning("U2-Net tuning cache %s is not writable (%s): not cached", cache.path, exc)
        return False
    return True


def load_cached(
    cache: SelectionCache,
    candidates: Sequence[Candidate],
    build: Callable[[Candidate], tuple[S, Callable[[], object]]],
) -> Selected[S] | None:
    """Build only the recorded choice and run it once; None if there is none or it fails."""
    cached = read_choice(cache)
    if cached is None:
        return None
    candidate, timings = cached
    if candidate not in candidates:
        log.warning("U2-Net tuning cache %s: %s is not a candidate", cache.path, candidate.label)
        return None
    try:
        session, run_once = build(candidate)
        run_once()  # also the warm-up: a choice that no longer runs here is measured again
    except ModelError as exc:
        log.warning("cached U2-Net choice %s failed (%s): measuring again", candidate.label, exc)
        return None
    return Selected(candidate, session, timings, {}, source="cached", cache_file=cache.path)


def select_cached(
    candidates: Sequence[Candidate],
    build: Callable[[Candidate], tuple[S, Callable[[], object]]],
    cache: SelectionCache | None,
    *,
    measure: Callable[[Callable[[], object]], float] = time_runs,
) -> Selected[S]:
    """The recorded choice for this key if it loads, else :func:`select_fastest`, recorded.

    A measurement in which a candidate failed is not recorded: the failure may
    be passing (memory pressure during a rollout), and a record should hold a
    fair comparison.
    """
    if cache is not None and (hit := load_cached(cache, candidates, build)) is not None:
        return hit
    picked = select_fastest(candidates, build, measure=measure)
    if cache is None or picked.failed:
        return picked
    if not write_choice(cache, picked.candidate, picked.timings_ms):
        return picked
    return replace(picked, cache_file=cache.path)
