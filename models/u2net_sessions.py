"""U2-Net's runtimes: an ONNX Runtime or OpenVINO session behind one ``run`` call, and the
candidate builder the runtime choice (`models.u2net_tuning`) times.

Apart from the predictor (`models.u2net`) so that what a session is, how each runtime is
configured and how INT8 runs behind its guard read in one place.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from models.errors import CorruptWeightsError, ModelError
from models.u2net_int8 import GuardedInt8, recipe_for
from models.u2net_tuning import Candidate, openvino_cpu_config, timing_input
from models.u2net_weights import U2NetWeights, check_io

log = logging.getLogger("models.u2net")

#: rembg resizes every input to this; used when the model's input size is dynamic
DEFAULT_INPUT_SIZE = (320, 320)
#: images per run when the model's batch dimension is dynamic
MAX_BATCH = 8


class U2NetInferenceError(ModelError):
    """The runtime failed while running a loaded model (not a weights problem)."""

    code = "inference_error"


def check_output(out: np.ndarray, n: int) -> np.ndarray:
    """One (1, H, W) map per image: a runtime that returns less must not drop masks silently."""
    if out.ndim != 4 or out.shape[0] != n or 0 in out.shape:
        raise U2NetInferenceError(f"the model returned shape {out.shape} for {n} image(s)")
    return out


class Session(NamedTuple):
    """A built runtime: one run call, the model input size (W, H), images per run."""

    run: Callable[[np.ndarray], np.ndarray]
    input_size: tuple[int, int]
    batch: int


def session_from(run: Callable[[np.ndarray], np.ndarray], shape: Sequence[Any]) -> Session:
    """From the input shape (N, C, H, W; None where dynamic): a static batch runs one image."""
    n, _, h, w = shape
    return Session(
        run,
        (w or DEFAULT_INPUT_SIZE[0], h or DEFAULT_INPUT_SIZE[1]),
        1 if n is not None else MAX_BATCH,
    )


def build_candidate(
    candidate: Candidate, weights: U2NetWeights, int8_model: Path | None
) -> tuple[Session, Callable[[], object]]:
    """The session of one runtime choice, and one timed run of it on a noise input. INT8 runs
    behind its guard, and is timed without it (the noise input's mask is soft, a photo's
    rarely)."""
    if candidate.runtime == "onnxruntime":
        session = load_onnxruntime(weights.path, candidate.threads)
    elif candidate.precision == "int8" and int8_model is not None:
        return int8_session(int8_model, weights, candidate.threads)
    else:
        session = load_openvino(weights.path, candidate.threads, candidate.precision)
    x = timing_input(session.input_size)
    return session, lambda: check_output(session.run(x), 1)


def int8_session(
    model: Path,
    weights: U2NetWeights,
    threads: int,
    f32_run: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[Session, Callable[[], object]]:
    """The INT8 model behind its guard, and one timed run of the INT8 model alone.

    The guard runs soft masks again in f32: on ``f32_run``, a session already running
    ``weights`` in f32 (a replica switching to INT8 keeps the one it served with, instead of
    compiling and holding a second copy of the model), or on one compiled here."""
    session = load_openvino(model, threads, "f32")
    if f32_run is None:
        f32_run = load_openvino(weights.path, threads, "f32").run
    guard = GuardedInt8(session.run, f32_run, recipe_for(weights).max_soft_share)
    x = timing_input(session.input_size)
    timed = session.run
    return session._replace(run=guard), lambda: check_output(timed(x), 1)


def dims(shape: Sequence[Any]) -> list[Any]:
    return [d if isinstance(d, int) and d > 0 else None for d in shape]


def load_onnxruntime(path: Path, threads: int) -> Session:
    """ORT session tuned for one-request-at-a-time CPU serving.

    All graph optimisations, a fixed intra-op pool of ``threads``, sequential
    execution (U2-Net is one chain of convolutions), memory arena on. Workers
    spin-wait between ops (ORT's default): measured 2-5% lower latency than
    blocking here; size ``threads`` to the replica's CPUs so the spinning does
    not steal cores from neighbours.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.enable_cpu_mem_arena = True
    opts.enable_mem_pattern = True
    opts.log_severity_level = 4  # failures come back as typed exceptions with ORT's text
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1")
    try:
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own Fail/InvalidProtobuf/RuntimeException types
        raise CorruptWeightsError(
            f"{path} cannot be loaded as an ONNX model ({type(exc).__name__}: {exc}); "
            "replace the file (see scripts/fetch_models.py for rembg's models)"
        ) from exc
    inputs, outputs = sess.get_inputs(), sess.get_outputs()
    check_io(
        path,
        [(i.name, i.type, list(i.shape)) for i in inputs],
        [(o.name, o.type, list(o.shape)) for o in outputs],
    )
    in_name, out_name = inputs[0].name, outputs[0].name

    def run(x: np.ndarray) -> np.ndarray:
        try:
            return sess.run([out_name], {in_name: x})[0]
        except Exception as exc:
            raise U2NetInferenceError(f"onnxruntime failed on {path.name}: {exc}") from exc

    return session_from(run, dims(inputs[0].shape))


def load_openvino(path: Path, threads: int, precision: str) -> Session:
    """OpenVINO CPU plugin, latency mode, one stream, f32 unless asked otherwise.

    OpenVINO defaults to bf16 on CPUs with avx512_bf16; that drifts outside
    rembg's tolerance for u2netp, hence the explicit precision hint. On a CPU
    without native bf16 a bf16 hint runs f32: logged, so nobody reads f32
    timings as bf16 ones.
    """
    import openvino as ov

    core = ov.Core()
    try:
        model = core.read_model(str(path))
    except Exception as exc:
        raise CorruptWeightsError(
            f"{path} cannot be read by OpenVINO ({type(exc).__name__}: {exc}); "
            "replace the file (see scripts/fetch_models.py for rembg's models)"
        ) from exc

    def ov_shape(port: Any) -> list[Any]:
        return [d.get_length() if d.is_static else None for d in port.get_partial_shape()]

    check_io(
        path,
        [(p.get_any_name(), str(p.get_element_type()), ov_shape(p)) for p in model.inputs],
        [(p.get_any_name(), "float", ov_shape(p)) for p in model.outputs],
    )
    try:
        compiled = core.compile_model(model, "CPU", openvino_cpu_config(threads, precision))
    except Exception as exc:
        raise CorruptWeightsError(f"OpenVINO could not compile {path}: {exc}") from exc
    if precision == "bf16":
        hint = compiled.get_property("INFERENCE_PRECISION_HINT")
        effective = hint.to_string() if hasattr(hint, "to_string") else str(hint)
        if effective != "bf16":
            log.warning("OpenVINO runs %s in %s: this CPU has no native bf16", path.name, effective)
    request = compiled.create_infer_request()
    lock = threading.Lock()

    def run(x: np.ndarray) -> np.ndarray:
        with lock:
            try:
                request.infer({0: x})
            except Exception as exc:
                raise U2NetInferenceError(f"OpenVINO failed on {path.name}: {exc}") from exc
            return request.get_output_tensor(0).data.copy()

    return session_from(run, ov_shape(model.inputs[0]))
