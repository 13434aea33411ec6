"""U2-Net inference: rembg's masks, computed faster.

Reproduces rembg 2.0.86 ``remove(img, session=new_session(name), only_mask=True)``
for the U2-Net family (u2net, u2netp, u2net_human_seg, silueta), which does:

1. ``ImageOps.exif_transpose`` (a no-op for arrays: the ingress decodes and
   orients images, this module gets RGB arrays), ``convert("RGB")``;
2. LANCZOS resize to the model input (320x320);
3. divide by the image maximum, then ``(x - mean) / std`` per channel in
   float64, cast to float32;
4. run the model, take output 0 (``d0``), min-max normalise it over the image,
   ``(p.clip(0, 1) * 255).astype(uint8)`` (truncation, not rounding);
5. LANCZOS resize back to the image size.

Speed-ups, all measured against that reference (docs/benchmarks.md, "U2-Net model runtime choices"):
step 3 is a 256-entry lookup table per channel (bit-identical); step 2 and 5
can use ``resize="fast"`` (Pillow's ``reducing_gap=3`` box pre-reduction for
large inputs, BICUBIC for the upscale); step 4 can run on OpenVINO, in f32 or,
for rembg's u2net with exact resizing on CPUs with native bf16, in bf16, or for
rembg's u2net in INT8 once made and checked on this CPU (``models.u2net_int8``: by the
tier itself on CPUs without native bf16, ``models.u2net_int8_build``, or ahead of time by
``bgremove quantize``). The runtimes' sessions are ``models.u2net_sessions``. Which
runtime, precision and thread count is fastest depends on the CPU, so
``load`` times the candidates where it runs (``models.u2net_tuning``).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from models.errors import Int8UnavailableError, ModelError
from models.hardware import openvino_available
from models.hardware import usable_cpus as default_threads
from models.u2net_int8 import GuardedInt8, int8_status, recipe_for, usable_int8
from models.u2net_int8_build import BuildBudget, Int8Builder, build_here, build_lock
from models.u2net_sessions import DEFAULT_INPUT_SIZE as DEFAULT_INPUT_SIZE
from models.u2net_sessions import MAX_BATCH as MAX_BATCH
from models.u2net_sessions import U2NetInferenceError as U2NetInferenceError
from models.u2net_sessions import build_candidate, check_output, int8_session
from models.u2net_transforms import ResizeMode, postprocess, preprocess, resize_filters
from models.u2net_tuning import (
    TIMED_RUNS,
    Candidate,
    Plan,
    SelectionCache,
    cpu_has_native_bf16,
    model_identity,
    plan_candidates,
    select_cached,
    selection_cache,
    selection_key,
    time_runs,
    timing_input,
)
from models.u2net_weights import U2NetWeights, model_spec, resolve_u2net_weights

log = logging.getLogger(__name__)

Runtime = Literal["auto", "onnxruntime", "openvino"]
Precision = Literal["f32", "bf16", "int8"]
Selection = Literal["measured", "cached", "pinned"]


@dataclass(frozen=True)
class U2NetInfo:
    """What is serving masks and why it was chosen; the service shows it in health.

    ``selection`` is ``"measured"`` when several candidates were timed at load
    (``timings_ms``: median ms of one run at ``input_size``, batch 1, keyed by
    ``runtime/precision/<threads>t``) and the fastest kept, ``"pinned"`` when
    the caller's pins (or what is installed) left one candidate and nothing
    was timed, ``"cached"`` when an earlier measurement under the same key
    (CPU, threads, model file, runtime versions, candidates) was reused from
    ``tuning_cache`` and only its choice was built (``timings_ms`` are that
    measurement's). ``tuning_cache`` is the record read or written, None when
    no cache was used. ``excluded`` says why candidates were not tried (or
    failed), keyed by a label or label prefix such as ``openvino/bf16``.
    """

    weights: U2NetWeights
    runtime: str
    precision: str
    threads: int
    resize: str
    input_size: tuple[int, int]
    batch: int
    selection: Selection = "pinned"
    timings_ms: dict[str, float] = field(default_factory=dict)
    excluded: dict[str, str] = field(default_factory=dict)
    tuning_cache: str | None = None

    @property
    def label(self) -> str:
        """The chosen candidate as keyed in ``timings_ms``, e.g. ``openvino/f32/2t``."""
        return Candidate(self.runtime, self.precision, self.threads).label

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["weights"] = self.weights.as_dict()
        return d


def _check_load_options(
    runtime: str, precision: str, resize: str, timing_runs: int, ov_installed: bool
) -> None:
    """Refuse bad `U2NetPredictor.load` options before any download or build."""
    if resize != "auto":
        resize_filters(resize)
    if precision not in ("auto", "f32", "bf16", "int8"):
        raise ValueError(f"precision must be 'auto', 'f32', 'bf16' or 'int8', not {precision!r}")
    if timing_runs < 1:
        raise ValueError(f"timing_runs must be at least 1, not {timing_runs}")
    if runtime not in ("auto", "onnxruntime", "openvino"):
        raise ValueError(f"runtime must be 'auto', 'onnxruntime' or 'openvino', not {runtime!r}")
    if precision in ("bf16", "int8") and (
        runtime == "onnxruntime" or (runtime == "auto" and not ov_installed)
    ):
        raise ValueError(
            f"precision={precision!r} needs runtime='openvino' (and openvino installed)"
        )


class U2NetPredictor:
    """A loaded U2-Net: ``predict`` maps RGB arrays to alpha masks at their own sizes.

    Build it with :meth:`load`. ``predict`` is safe to call from several threads: their
    pre- and post-processing overlap, their network runs take turns (each run already
    uses every CPU the predictor was given).
    """

    def __init__(
        self,
        run: Callable[[np.ndarray], np.ndarray],
        info: U2NetInfo,
        *,
        timing_runs: int = TIMED_RUNS,
    ) -> None:
        self._run = run
        self.info = info
        #: timed runs per candidate when INT8 arrives and is timed against the serving one
        self._timing_runs = timing_runs
        self._reducing_gap, self._upscale = resize_filters(info.resize)  # type: ignore[arg-type]
        #: the background INT8 build (None: not this predictor's to make)
        self.int8_build: Int8Builder | None = None
        #: why no INT8 model is built for this predictor (None: one is, or it serves INT8)
        self.int8_build_off: str | None = None
        self._switch = threading.Lock()
        #: one network run at a time on the replica's CPUs, requests' and timing runs alike:
        #: INT8 timed beside a request in flight shared the CPUs with it while the serving
        #: runtime's timing waited for it, and a saturated replica once timed INT8 no faster
        #: than f32 (649 vs 651 ms) where it was 1.8x faster
        self._running = threading.Lock()

    @property
    def int8_guard(self) -> dict[str, float] | None:
        """INT8 only: images run, and those run again in f32 because their mask was soft."""
        if not isinstance(self._run, GuardedInt8):
            return None
        return {
            "images": self._run.images,
            "redone_f32": self._run.redone,
            "max_soft_share": self._run.max_soft_share,
        }

    def int8_state(self) -> dict[str, Any]:
        """For health: whether INT8 serves, is being made, or why not (state and reason), and
        the guard's counts while it serves."""
        if self.info.precision == "int8":
            state: dict[str, Any] = {"state": "ready", "reason": "serving INT8"}
        elif self.int8_build is not None:
            state = self.int8_build.as_dict()
            if state["state"] == "ready":  # made and checked, but timed slower than the current
                state["reason"] = f"kept {self.info.label}: INT8 was not faster here"
        else:
            state = {"state": "off", "reason": self.int8_build_off or "no background build here"}
        return {**state, "guard": self.int8_guard}

    @classmethod
    def load(
        cls,
        model_name: str = "u2net",
        path: str | os.PathLike[str] | None = None,
        home: str | os.PathLike[str] | None = None,
        runtime: Runtime = "auto",
        threads: int | None = None,
        allow_download: bool = True,
        *,
        resize: ResizeMode | Literal["auto"] = "auto",
        precision: Precision | Literal["auto"] = "auto",
        warmup: bool = True,
        tuning_cache_dir: str | os.PathLike[str] | None = None,
        int8_build: BuildBudget | None = None,
        timing_runs: int = TIMED_RUNS,
    ) -> U2NetPredictor:
        """Resolve the weights (see ``resolve_u2net_weights``), then build the fastest runtime.

        Whatever is ``auto`` (``runtime``, ``precision``) or None (``threads``)
        is chosen by timing, on this machine, every candidate that keeps
        rembg's masks within tolerance (``models.u2net_tuning``): ONNX Runtime
        f32; OpenVINO f32 if installed; OpenVINO bf16 only for rembg's own
        ``u2net`` file with exact resizing on a CPU with native bf16 (with
        exact resizing its masks stay within tolerance on every reference
        photo, worst mean |diff| 0.91; with fast resizing 1.05, just over;
        u2netp in bf16 is far outside, 5.5). Measured, bf16 was 1.9x faster
        than f32 on one CPU and 1.7x slower on another, hence no fixed rule.
        Threads: the CPUs this process may use, and half of them from 4 CPUs.
        Pins restrict the candidates; with one left nothing is timed
        (``info.selection == "pinned"``). ``resize="auto"`` is ``exact`` with
        bf16 (its error budget goes to the model) and ``fast`` with f32;
        ``resize="exact"`` with ONNX Runtime reproduces rembg's masks bit for
        bit. A pinned bf16 on a CPU without it runs f32 (OpenVINO's choice; logged).

        With ``tuning_cache_dir`` (None or empty: off) a measured choice is
        recorded there and reused by later loads with the same key, which then
        build only that candidate (``info.selection == "cached"``); a directory
        that is not writable only costs the caching (logged). Weights from the home
        that passed their MD5 check are recorded there too, and not hashed again
        while unchanged.

        Timing runs warm the chosen session, so ``warmup`` only matters when
        nothing was timed. ``timing_runs``: timed runs per candidate (their median counts,
        after one untimed run); fewer start faster and choose on a noisier figure.

        INT8 needs its model made on this CPU (``models.u2net_int8_build``): pinned
        ``precision="int8"`` makes it here and now when it is missing (and fails when it is
        out of tolerance); with ``int8_build`` an ``auto`` load that serves f32 on a CPU
        without native bf16 starts making it in the background and switches to it between
        two ``predict`` calls once it is ready and measured faster.
        """
        ov_installed = openvino_available()
        _check_load_options(runtime, precision, resize, timing_runs, ov_installed)
        weights = resolve_u2net_weights(
            model_name,
            path=path,
            home=home,
            allow_download=allow_download,
            validate=False,
            checked_dir=tuning_cache_dir,
        )
        pinned_threads = threads if threads and threads > 0 else None
        cpus = default_threads()
        int8_model, int8_why = None, "precision or runtime pinned to another choice"
        if ov_installed and precision in ("auto", "int8") and runtime in ("auto", "openvino"):
            int8_model, int8_why = usable_int8(weights)
            if precision == "int8" and int8_model is None:
                int8_model = _require_int8(weights, pinned_threads or cpus)
        plan = plan_candidates(
            model_name=weights.name,
            rembg_file=_is_rembg_file(weights),
            runtime=runtime,
            precision=precision,
            threads=pinned_threads,
            resize=resize,
            cpus=cpus,
            openvino_installed=ov_installed,
            int8_exclusion=None if int8_model is not None else int8_why,
            cpu_bf16=cpu_has_native_bf16,
        )

        build = functools.partial(build_candidate, weights=weights, int8_model=int8_model)

        excluded = dict(plan.excluded)
        timings: dict[str, float] = {}
        cache_file: str | None = None
        if len(plan.candidates) == 1:
            chosen = plan.candidates[0]
            session, _ = build(chosen)
            selection: Selection = "pinned"
        else:
            cache = _tuning_cache(tuning_cache_dir, weights, plan, cpus, pinned_threads, int8_model)
            measure = functools.partial(time_runs, timed_runs=timing_runs)
            picked = select_cached(plan.candidates, build, cache, measure=measure)
            chosen, session, timings = picked.candidate, picked.session, picked.timings_ms
            excluded.update(picked.failed)
            selection = picked.source
            cache_file = str(picked.cache_file) if picked.cache_file else None
            warmup = False  # the timing runs (or the cached choice's check run) warmed it
        if resize == "auto":
            resize = "exact" if chosen.precision == "bf16" else "fast"
        info = U2NetInfo(
            weights=weights,
            runtime=chosen.runtime,
            precision=chosen.precision,
            threads=chosen.threads,
            resize=resize,
            input_size=session.input_size,
            batch=session.batch,
            selection=selection,
            timings_ms=timings,
            excluded=excluded,
            tuning_cache=cache_file,
        )
        log.info(
            "U2-Net %s: %s %s, resize %s; timings (ms): %s; excluded: %s; tuning cache: %s",
            weights.name,
            info.label,
            selection,
            resize,
            ", ".join(f"{k} {v:.1f}" for k, v in timings.items()) or "none",
            "; ".join(f"{k}: {v}" for k, v in excluded.items()) or "none",
            cache_file or "none",
        )
        predictor = cls(session.run, info, timing_runs=timing_runs)
        if warmup:
            predictor.warmup()
        if int8_build is not None:
            predictor._start_int8_build(int8_build, precision, runtime, ov_installed)
        return predictor

    def _start_int8_build(
        self, budget: BuildBudget, precision: str, runtime: str, ov_installed: bool
    ) -> None:
        """Start making the INT8 model in the background where it can pay off; else say why."""
        info = self.info
        if precision != "auto" or runtime == "onnxruntime":
            self.int8_build_off = f"precision {precision!r}, runtime {runtime!r} pinned"
        elif not ov_installed:
            self.int8_build_off = "openvino is not installed"
        elif info.precision == "int8":
            self.int8_build_off = "serving INT8 already"
        elif info.precision == "bf16" or cpu_has_native_bf16():
            self.int8_build_off = "this CPU has native bf16: bf16 is the fast candidate"
        elif any(label.startswith("openvino/int8") for label in info.timings_ms):
            self.int8_build_off = "INT8 was timed at load and was not the fastest"
        else:
            try:
                recipe_for(info.weights)
            except Int8UnavailableError as exc:
                self.int8_build_off = str(exc)
        if self.int8_build_off is not None:
            log.info("U2-Net %s: no INT8 build: %s", info.weights.name, self.int8_build_off)
            return
        self.int8_build = Int8Builder(info.weights, budget, on_ready=self._adopt_int8)
        self.int8_build.start()

    def _adopt_int8(self, model: Path) -> None:
        """Build the INT8 runtime beside the serving one, time both on the same input, and
        serve INT8 from the next ``predict`` call if it is faster (requests never wait: the
        swap is two attribute writes between calls)."""
        info, weights = self.info, self.info.weights
        # a build starts only where the replica serves f32 (`_start_int8_build`): the
        # serving run is the guard's f32 run too
        session, timed = int8_session(model, weights, info.threads, f32_run=self._run)
        x = timing_input(info.input_size)
        label = Candidate("openvino", "int8", info.threads).label
        with self._running:  # INT8's first run sets up its kernels: not timed
            timed()
        # interleaved, so load from other processes weighs on both alike; each run takes
        # its turn with the requests' runs, so neither is timed sharing the CPUs with them
        current_ms, int8_ms = [], []
        for _ in range(3):
            current_ms.append(self._time_alone(lambda: self._run(x)))
            int8_ms.append(self._time_alone(timed))
        timings = {**info.timings_ms, info.label: min(current_ms), label: min(int8_ms)}
        if min(int8_ms) >= min(current_ms):
            log.info(
                "U2-Net %s: INT8 %.1f ms is not faster than %s %.1f ms: kept",
                weights.name,
                min(int8_ms),
                info.label,
                min(current_ms),
            )
            self.info = replace(info, timings_ms=timings)
            return
        new_info = replace(
            info,
            runtime="openvino",
            precision="int8",
            batch=session.batch,
            selection="measured",
            timings_ms=timings,
        )
        with self._switch:
            self._run, self.info = session.run, new_info
        log.info(
            "U2-Net %s: switched to INT8 (%.1f ms against %s %.1f ms)",
            weights.name,
            min(int8_ms),
            info.label,
            min(current_ms),
        )

    def _time_alone(self, run: Callable[[], object]) -> float:
        """Median ms of ``run()`` on a warm runtime, each run taking its turn with the
        requests' runs (the wait for the turn is not timed)."""
        return time_runs(run, warmup_runs=0, timed_runs=self._timing_runs, turn=self._running)

    def warmup(self) -> None:
        """One run on a blank input, so lazy kernel setup is not paid by the first request."""
        w, h = self.info.input_size
        self._run(np.zeros((1, 3, h, w), dtype=np.float32))

    def predict(
        self,
        images: Sequence[np.ndarray],
        *,
        output_sizes: Sequence[tuple[int, int]] | None = None,
    ) -> list[np.ndarray]:
        """RGB uint8 HxWx3 arrays (any size) -> HxW uint8 alpha masks, one per image.

        ``output_sizes`` ((W, H) per image) lets a caller that decoded a reduced
        image (JPEG draft) ask for the mask at the original size. An image
        already at ``info.input_size`` is not resized and its mask comes back
        at that size unresized, so a caller may do both resizes itself with
        ``resize_filters(info.resize)``.
        """
        if output_sizes is not None and len(output_sizes) != len(images):
            raise ValueError("output_sizes must have one (W, H) per image")
        sizes = (
            list(output_sizes)
            if output_sizes is not None
            else [(int(a.shape[1]), int(a.shape[0])) for a in images]
        )
        masks: list[np.ndarray] = []
        with self._switch:  # one runtime for the whole call, even if INT8 arrives meanwhile
            run, info = self._run, self.info
        step = info.batch
        for start in range(0, len(images), step):
            chunk = images[start : start + step]
            x = np.stack([preprocess(a, info.input_size, self._reducing_gap) for a in chunk])
            with self._running:
                y = run(x)
            out = check_output(y, len(chunk))
            for i, pred in enumerate(out):
                masks.append(postprocess(pred[0], sizes[start + i], self._upscale))
        return masks


def _require_int8(weights: U2NetWeights, threads: int) -> Path:
    """Pinned INT8 without a model: make it now, or fail saying why it cannot be had."""
    status = int8_status(weights)
    if status.state in ("missing", "stale"):
        with build_lock(weights):  # a replica or `bgremove quantize` making it finishes first
            status = int8_status(weights)
            if status.state in ("missing", "stale"):
                why = status.reason
                log.info("U2-Net %s: precision='int8' and %s: making it now", weights.name, why)
                build_here(weights, threads=threads)
                status = int8_status(weights)
    if status.model is None:
        raise Int8UnavailableError(f"precision='int8' for {weights.name}: {status.reason}")
    return status.model


def _is_rembg_file(weights: U2NetWeights) -> bool:
    """rembg's own file for this name (checked by MD5), not an operator's own model."""
    if weights.source == "path":
        return False
    try:
        return weights.md5 == model_spec(weights.name).md5
    except ModelError:
        return False


def _tuning_cache(
    cache_dir: str | os.PathLike[str] | None,
    weights: U2NetWeights,
    plan: Plan,
    cpus: int,
    threads: int | None,
    int8_model: Path | None = None,
) -> SelectionCache | None:
    """Where this load's measured choice is recorded, under which key (None: no cache).
    A new INT8 model (its report, which holds its hash) makes a new key."""
    if not cache_dir:
        return None
    model = model_identity(weights.path, weights.md5)
    if int8_model is not None:
        report = int8_model.with_suffix(".json")
        model["int8_report_sha256"] = hashlib.sha256(report.read_bytes()).hexdigest()
    key = selection_key(
        model=model,
        candidates=plan.candidates,
        cpus=cpus,
        threads=threads,
    )
    return selection_cache(cache_dir, key)
