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
large inputs, BICUBIC for the upscale); step 4 can run on OpenVINO in f32.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from models.errors import CorruptWeightsError, ModelError
from models.u2net_weights import U2NetWeights, check_io, resolve_u2net_weights

Runtime = Literal["auto", "onnxruntime", "openvino"]
ResizeMode = Literal["exact", "fast"]
Precision = Literal["f32", "bf16"]

#: ImageNet statistics, as rembg's U2-Net sessions pass them to ``normalize``
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
#: rembg resizes every input to this; used when the model's input size is dynamic
DEFAULT_INPUT_SIZE = (320, 320)
#: Pillow pre-reduces by an integer box filter while the remaining LANCZOS
#: step still downsamples by >= this factor; 3.0 stays well inside tolerance
FAST_REDUCING_GAP = 3.0
#: images per run when the model's batch dimension is dynamic
MAX_BATCH = 8


class U2NetInferenceError(ModelError):
    """The runtime failed while running a loaded model (not a weights problem)."""

    code = "inference_error"


@dataclass(frozen=True)
class U2NetInfo:
    """What is serving masks; the service shows it in health."""

    weights: U2NetWeights
    runtime: str
    precision: str
    threads: int
    resize: str
    input_size: tuple[int, int]
    batch: int

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["weights"] = self.weights.as_dict()
        return d


def default_threads() -> int:
    """CPUs this process may run on (respects cpusets/taskset, unlike os.cpu_count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def _resize_filters(mode: ResizeMode) -> tuple[float | None, Image.Resampling]:
    """(reducing_gap for the downscale, filter for the upscale)."""
    if mode == "exact":
        return None, Image.Resampling.LANCZOS
    if mode == "fast":
        return FAST_REDUCING_GAP, Image.Resampling.BICUBIC
    raise ValueError(f"resize must be 'exact' or 'fast', not {mode!r}")


def _to_pil_rgb(image: np.ndarray) -> Image.Image:
    """Like rembg's ``Image.fromarray(a).convert("RGB")`` for uint8 HxW, HxWx3 or HxWx4."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 numpy array, got {getattr(image, 'dtype', image)!r}")
    if (image.ndim == 3 and image.shape[2] == 3) or image.ndim == 2:
        pil = Image.fromarray(np.ascontiguousarray(image))
    elif image.ndim == 3 and image.shape[2] == 4:
        pil = Image.fromarray(np.ascontiguousarray(image), "RGBA")
    else:
        raise ValueError(f"expected an HxWx3 RGB array, got shape {image.shape}")
    if min(pil.size) < 1:
        raise ValueError(f"empty image of shape {image.shape}")
    return pil.convert("RGB") if pil.mode != "RGB" else pil


def preprocess(
    image: np.ndarray, size: tuple[int, int], reducing_gap: float | None = None
) -> np.ndarray:
    """RGB uint8 array -> (3, H, W) float32 input, bit-identical to rembg's ``normalize``.

    rembg divides by the image max and standardises in float64 before the
    float32 cast; the values are a function of (uint8 value, max, channel)
    only, so a 256-entry table per channel gives the same float32 numbers.
    """
    small = _to_pil_rgb(image).resize(size, Image.Resampling.LANCZOS, reducing_gap=reducing_gap)
    u8 = np.asarray(small)
    scaled = np.arange(256, dtype=np.float64) / max(float(u8.max()), 1e-6)
    out = np.empty((3, size[1], size[0]), dtype=np.float32)
    for c in range(3):
        lut = ((scaled - MEAN[c]) / STD[c]).astype(np.float32)
        np.take(lut, u8[:, :, c], out=out[c])
    return out


def postprocess(pred: np.ndarray, size: tuple[int, int], upscale: Image.Resampling) -> np.ndarray:
    """(H', W') model output -> HxW uint8 mask at ``size`` (W, H), as rembg does.

    A constant prediction (rembg divides by zero there) gives an empty mask.
    """
    pred = np.asarray(pred, dtype=np.float32)
    lo, hi = pred.min(), pred.max()
    if not hi > lo:
        return np.zeros((size[1], size[0]), dtype=np.uint8)
    norm = (pred - lo) / (hi - lo)
    small = Image.fromarray((norm.clip(0, 1) * 255).astype(np.uint8), mode="L")
    if small.size == size:
        return np.asarray(small)
    return np.asarray(small.resize(size, upscale))


class U2NetPredictor:
    """A loaded U2-Net: ``predict`` maps RGB arrays to alpha masks at their own sizes.

    Build it with :meth:`load`. ``predict`` is safe to call from several threads
    (OpenVINO requests are serialised; ORT sessions are thread-safe).
    """

    def __init__(
        self,
        run: Callable[[np.ndarray], np.ndarray],
        info: U2NetInfo,
    ) -> None:
        self._run = run
        self.info = info
        self._reducing_gap, self._upscale = _resize_filters(info.resize)  # type: ignore[arg-type]

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
    ) -> U2NetPredictor:
        """Resolve the weights (see ``resolve_u2net_weights``) and build a runtime session.

        ``runtime="auto"`` picks OpenVINO when it is installed (f32: ~10% faster
        than ORT here, same masks), else ONNX Runtime. ``precision="auto"`` is
        ``bf16`` for rembg's ``u2net`` on OpenVINO (about 1.9x faster; with exact
        resizing its masks stay within rembg's tolerance on every reference
        photo, worst mean |diff| 0.91 on a CPU without AMX) and ``f32``
        otherwise: bf16 is NOT within tolerance for u2netp (mean |diff| 5.5).
        ``resize="auto"`` is ``exact`` with bf16 (its error budget goes to the
        model) and ``fast`` with f32. ``resize="exact"`` with ORT reproduces
        rembg's masks bit for bit. On CPUs without bf16 support OpenVINO runs
        f32 whatever the hint.
        """
        if runtime == "auto":
            runtime = "openvino" if openvino_available() else "onnxruntime"
        if precision == "auto":
            own_file = path is not None
            precision = (
                "bf16"
                if runtime == "openvino" and model_name == "u2net" and not own_file
                else "f32"
            )
        if resize == "auto":
            resize = "exact" if precision == "bf16" else "fast"
        # bad options fail before any download
        _resize_filters(resize)
        if precision not in ("f32", "bf16"):
            raise ValueError(f"precision must be 'f32' or 'bf16', not {precision!r}")
        if runtime not in ("onnxruntime", "openvino"):
            raise ValueError(
                f"runtime must be 'auto', 'onnxruntime' or 'openvino', not {runtime!r}"
            )
        if runtime == "onnxruntime" and precision != "f32":
            raise ValueError("precision='bf16' needs runtime='openvino'")
        weights = resolve_u2net_weights(
            model_name, path=path, home=home, allow_download=allow_download, validate=False
        )
        n_threads = threads if threads and threads > 0 else default_threads()
        if runtime == "onnxruntime":
            run, in_shape, batch = _load_onnxruntime(weights.path, n_threads)
        else:
            run, in_shape, batch = _load_openvino(weights.path, n_threads, precision)
        h, w = in_shape
        info = U2NetInfo(
            weights=weights,
            runtime=runtime,
            precision=precision,
            threads=n_threads,
            resize=resize,
            input_size=(
                w if isinstance(w, int) and w > 0 else DEFAULT_INPUT_SIZE[0],
                h if isinstance(h, int) and h > 0 else DEFAULT_INPUT_SIZE[1],
            ),
            batch=batch,
        )
        predictor = cls(run, info)
        if warmup:
            predictor.warmup()
        return predictor

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
        image (JPEG draft) ask for the mask at the original size.
        """
        if output_sizes is not None and len(output_sizes) != len(images):
            raise ValueError("output_sizes must have one (W, H) per image")
        sizes = (
            list(output_sizes)
            if output_sizes is not None
            else [(int(a.shape[1]), int(a.shape[0])) for a in images]
        )
        masks: list[np.ndarray] = []
        step = self.info.batch
        for start in range(0, len(images), step):
            chunk = images[start : start + step]
            x = np.stack([preprocess(a, self.info.input_size, self._reducing_gap) for a in chunk])
            out = self._run(x)
            for i, pred in enumerate(out):
                masks.append(postprocess(pred[0], sizes[start + i], self._upscale))
        return masks


def _dims(shape: Sequence[Any]) -> list[Any]:
    return [d if isinstance(d, int) and d > 0 else None for d in shape]


def _load_onnxruntime(
    path: Path, threads: int
) -> tuple[Callable[[np.ndarray], np.ndarray], tuple[Any, Any], int]:
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
    n, _, h, w = _dims(inputs[0].shape)

    def run(x: np.ndarray) -> np.ndarray:
        try:
            return sess.run([out_name], {in_name: x})[0]
        except Exception as exc:
            raise U2NetInferenceError(f"onnxruntime failed on {path.name}: {exc}") from exc

    return run, (h, w), 1 if n is not None else MAX_BATCH


def _load_openvino(
    path: Path, threads: int, precision: Precision
) -> tuple[Callable[[np.ndarray], np.ndarray], tuple[Any, Any], int]:
    """OpenVINO CPU plugin, latency mode, one stream, f32 unless asked otherwise.

    OpenVINO defaults to bf16 on CPUs with avx512_bf16; that drifts outside
    rembg's tolerance for u2netp here, hence the explicit precision hint.
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
    n, _, h, w = ov_shape(model.inputs[0])
    config = {
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": "1",
        "INFERENCE_NUM_THREADS": str(threads),
        "INFERENCE_PRECISION_HINT": precision,
    }
    try:
        compiled = core.compile_model(model, "CPU", config)
    except Exception as exc:
        raise CorruptWeightsError(f"OpenVINO could not compile {path}: {exc}") from exc
    request = compiled.create_infer_request()
    lock = threading.Lock()

    def run(x: np.ndarray) -> np.ndarray:
        with lock:
            try:
                request.infer({0: x})
            except Exception as exc:
                raise U2NetInferenceError(f"OpenVINO failed on {path.name}: {exc}") from exc
            return request.get_output_tensor(0).data.copy()

    return run, (h, w), 1 if n is not None else MAX_BATCH
