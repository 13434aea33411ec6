"""RMBG-2.0 inference: RGB uint8 images in, uint8 alpha masks at the original size out.

The whole pipeline after the upload runs on the model's device: uint8 pixels
are uploaded once, converted, resized (bilinear, antialiased, like the
official torchvision `Resize`), normalized with ImageNet statistics, stacked
into one (B, 3, R, R) batch, run through BiRefNet, and the sigmoid mask is
resized back to every image's own size before one download of uint8 bytes.
On a GPU this keeps the CPU of the replica out of the critical path.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.birefnet import BiRefNet
from models.errors import DeviceUnavailableError
from models.hardware import openvino_available
from models.rmbg_openvino import RMBGOpenVINOPredictor, normalize_precision
from models.rmbg_transforms import check_images, logits_to_masks, normalization, resize_normalize
from models.rmbg_weights import load_birefnet

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "torch", "openvino")

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def resolve_device(device: str) -> torch.device:
    """`auto` -> cuda when present, else cpu; `cuda[:N]` without that GPU is an error."""
    name = device.strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"unknown device {device!r}; use 'auto', 'cpu' or 'cuda[:N]'") from error
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceUnavailableError(
                f"Device {device!r} was requested but CUDA is not available on this machine"
                " (no GPU, no driver, or a CPU-only torch build). Set the device to 'cpu' or"
                " 'auto', or schedule this replica on a GPU node."
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceUnavailableError(
                f"Device {device!r} was requested but only {torch.cuda.device_count()} GPU(s)"
                " are visible; check CUDA_VISIBLE_DEVICES or the device setting."
            )
    elif dev.type != "cpu":
        raise ValueError(f"unsupported device {device!r}; use 'auto', 'cpu' or 'cuda[:N]'")
    return dev


def resolve_dtype(dtype: str | torch.dtype, device: torch.device | None = None) -> torch.dtype:
    """Accept 'float32'|'float16'|'bfloat16' (or fp32/fp16/bf16, or a torch dtype).

    'auto' is float16 on CUDA and float32 elsewhere. On an H100 float16 and
    bfloat16 autocast ran at the same speed (1.7-1.9x float32), but float16
    masks were 10x closer to float32 (mean 0.013 vs 0.125 levels of 255) and
    older GPUs (T4, V100) have no bfloat16; a float16 overflow is caught per
    batch (see `RMBGPredictor.predict`). CPU autocast gains little and costs
    precision.
    """
    if isinstance(dtype, str) and dtype.lower() == "auto":
        return torch.float16 if device is not None and device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype in _DTYPES.values():
            return dtype
    elif dtype.lower() in _DTYPES:
        return _DTYPES[dtype.lower()]
    raise ValueError(f"unsupported dtype {dtype!r}; use float32, float16 or bfloat16")


def _bucket(n: int) -> int:
    """Next power of two: with torch.compile, batches are padded to few shapes."""
    return 1 << max(0, math.ceil(math.log2(n)))


class RMBGPredictor:
    """Batched background-removal masks from a BiRefNet model.

    Reduced precision runs under `torch.autocast`: weights stay float32,
    matmuls/convs run in fp16/bf16 while LayerNorm, softmax statistics, the
    deformable convs and the final sigmoid stay float32 (casting the whole
    model would run LayerNorm in bf16, and torchvision's deformable conv has
    no bf16 kernel).
    """

    runtime = "torch"

    def __init__(
        self,
        model: BiRefNet,
        *,
        resolution: int = 1024,
        device: str = "auto",
        dtype: str | torch.dtype = "float32",
        compile: bool = False,
    ) -> None:
        if resolution <= 0 or resolution % 32:
            raise ValueError(f"resolution must be a positive multiple of 32, got {resolution}")
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.resolution = resolution
        self.arch = model.config.name
        self.compiled = compile
        self.model = model.eval().to(self.device)
        self._forward: Callable[[torch.Tensor], torch.Tensor] = (
            torch.compile(self.model, dynamic=False) if compile else self.model
        )
        self._shift, self._scale = normalization(self.device)
        self._staging: torch.Tensor | None = None
        #: why this runtime serves (set by `load_rmbg_predictor`), shown in health
        self.runtime_reason = "torch requested"
        #: float16 batches that overflowed and were redone in float32, shown in health
        self.overflows = 0
        #: padded batch sizes already compiled (torch.compile only)
        self.warm_batches: set[int] = set()

    @classmethod
    def from_source(
        cls,
        source: str | Path | None = None,
        *,
        arch: str = "rmbg-2.0",
        resolution: int = 1024,
        device: str = "auto",
        dtype: str | torch.dtype = "float32",
        compile: bool = False,
        revision: str | None = None,
        token: str | None = None,
        offline: bool | None = None,
        cache_dir: str | Path | None = None,
    ) -> RMBGPredictor:
        """Load weights (see `models.rmbg_weights.load_birefnet`) and wrap them.

        The device is checked before the (large) weights are read.
        """
        resolve_dtype(dtype, resolve_device(device))
        model = load_birefnet(
            source, arch=arch, revision=revision, token=token, offline=offline, cache_dir=cache_dir
        )
        return cls(model, resolution=resolution, device=device, dtype=dtype, compile=compile)

    def _autocast(self) -> torch.autocast:
        return torch.autocast(
            device_type=self.device.type,
            dtype=self.dtype,
            enabled=self.dtype != torch.float32,
        )

    @staticmethod
    def _validate(images: Sequence[np.ndarray]) -> None:
        check_images(images)

    def _upload(self, images: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """One host-to-device copy for the whole batch; returns (1, 3, H, W) uint8 views."""
        total = sum(img.size for img in images)
        if self.device.type == "cuda":
            # reused pinned staging buffer: one async DMA, no per-call cudaHostAlloc
            if self._staging is None or self._staging.numel() < total:
                self._staging = torch.empty(total, dtype=torch.uint8).pin_memory()
            host = self._staging[:total]
            np.concatenate([img.reshape(-1) for img in images], out=host.numpy())
        else:
            host = torch.from_numpy(np.concatenate([img.reshape(-1) for img in images]))
        data = host.to(self.device, non_blocking=True)
        out, offset = [], 0
        for img in images:
            h, w, _ = img.shape
            out.append(data[offset : offset + h * w * 3].view(1, h, w, 3).permute(0, 3, 1, 2))
            offset += h * w * 3
        return out

    def preprocess(self, images: Sequence[np.ndarray], batch: int | None = None) -> torch.Tensor:
        """Normalized (B', 3, R, R) float32 batch on the device; zero-padded to `batch` rows."""
        return resize_normalize(
            self._upload(images), self.resolution, self._shift, self._scale, batch
        )

    def postprocess(
        self, logits: torch.Tensor, sizes: Sequence[tuple[int, int]]
    ) -> list[np.ndarray]:
        """Sigmoid in float32, resize to each size, round to 0..255, one device-to-host copy."""
        return logits_to_masks(logits, sizes)

    @torch.inference_mode()
    def predict_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Raw network output for an already normalized batch."""
        with self._autocast():
            return self._forward(x)

    @torch.inference_mode()
    def predict(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Alpha masks (HxW uint8, 0..255) for RGB HxWx3 uint8 images of any sizes."""
        if not images:
            return []
        self._validate(images)
        n = len(images)
        x = self.preprocess(images, batch=_bucket(n) if self.compiled else None)
        logits = self.predict_logits(x)[:n]
        if self.dtype == torch.float16 and not bool(torch.isfinite(logits).all()):
            # float16 tops out at 65504: an overflowing batch is redone in float32
            self.overflows += 1
            log.warning("RMBG-2.0: float16 overflow in a batch of %d; redone in float32", n)
            with torch.autocast(device_type=self.device.type, enabled=False):
                logits = self._forward(x)[:n]
        return self.postprocess(logits, [(img.shape[0], img.shape[1]) for img in images])

    def warmup(self, batch_size: int = 1) -> None:
        """Run one batch of blank images so kernels (and compiled graphs) are ready."""
        img = np.zeros((self.resolution, self.resolution, 3), dtype=np.uint8)
        self.predict([img] * batch_size)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        if self.compiled:
            self.warm_batches.add(_bucket(batch_size))

    def prepare_batches(self, max_batch_size: int) -> None:
        """Compile every padded batch shape a batch of up to `max_batch_size` can take.

        With torch.compile each shape compiles on its first use: about 2 minutes on an
        H100 (about 20 s from Inductor's on-disk cache), far past a request's deadline, so
        a replica compiles them all before it takes traffic. Eager: nothing to do.
        """
        if not self.compiled:
            return
        size = 1
        while size <= _bucket(max_batch_size):
            if size not in self.warm_batches:
                started = time.perf_counter()
                self.warmup(size)
                log.info(
                    "RMBG-2.0: batch shape %d compiled in %.1f s",
                    size,
                    time.perf_counter() - started,
                )
            size *= 2

    def describe(self) -> dict[str, Any]:
        """Facts for health output, with the same first keys as the OpenVINO predictor's."""
        return {
            "runtime": self.runtime,
            "runtime_reason": self.runtime_reason,
            "device": str(self.device),
            "arch": self.arch,
            "resolution": self.resolution,
            "dtype": str(self.dtype).removeprefix("torch."),
            "compile": self.compiled,
            "float16_overflows": self.overflows,
            "compiled_batches": sorted(self.warm_batches),
        }


def _openvino_device_error(device: str) -> ValueError:
    return ValueError(
        f"runtime 'openvino' runs on the CPU only, but the device is {device!r}; "
        "set the device to 'cpu' or 'auto', or the runtime to 'torch'"
    )


def select_runtime(
    runtime: str, device: torch.device, dtype: str | torch.dtype, *, openvino_installed: bool
) -> tuple[str, str]:
    """(runtime, why) for a resolved device; `runtime` is 'auto', 'torch' or 'openvino'.

    auto: OpenVINO on the CPU (1.6x faster than PyTorch for RMBG-2.0 at 1024 on
    2 AVX2 cores, ~3-4x on AVX-512 Xeons; same masks) when it is installed and
    the dtype is one it offers; PyTorch on CUDA. 'openvino' with a CUDA device
    is an error: OpenVINO serves the CPU.
    """
    name = runtime.strip().lower()
    if name not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, not {runtime!r}")
    fp16 = str(dtype).lower().removeprefix("torch.") in ("float16", "fp16")
    if name == "openvino":
        if device.type != "cpu":
            raise _openvino_device_error(str(device))
        if fp16:
            raise ValueError("runtime 'openvino' offers float32 and bfloat16, not float16")
        return "openvino", "openvino requested"
    if name == "torch":
        return "torch", "torch requested"
    if device.type != "cpu":
        return "torch", f"auto: device {device} is served by torch (OpenVINO serves the CPU)"
    if not openvino_installed:
        return "torch", "auto: CPU device but openvino is not installed"
    if fp16:
        return "torch", "auto: CPU device but OpenVINO offers no float16 on the CPU"
    return "openvino", "auto: CPU device and openvino installed"


def load_rmbg_predictor(
    source: str | Path | None = None,
    *,
    arch: str = "rmbg-2.0",
    resolution: int = 1024,
    device: str = "auto",
    dtype: str | torch.dtype = "auto",
    compile: bool = False,
    revision: str | None = None,
    token: str | None = None,
    offline: bool | None = None,
    hub_cache_dir: str | Path | None = None,
    runtime: str = "auto",
    cache_dir: str | Path | None = None,
    threads: int | None = None,
    batch_size: int = 1,
    compile_cache: bool = False,
) -> RMBGPredictor | RMBGOpenVINOPredictor:
    """The one entry point of the service: weights loaded, runtime chosen, predictor built.

    `runtime`: 'auto' (OpenVINO on CPU, PyTorch on CUDA), 'torch' or 'openvino'.
    With 'openvino', `device='auto'` means the CPU. `cache_dir` is OpenVINO's
    converted-model cache (default `$XDG_CACHE_HOME/bg-removal/openvino`);
    `hub_cache_dir` is the Hugging Face cache. For OpenVINO, `dtype` maps to
    its precision: auto -> measured choice, float32 -> f32, bfloat16 -> bf16;
    `threads`, `batch_size` (the static graph batch) and `compile_cache`
    (OpenVINO's compiled-blob cache: ~6 s less start-up for RMBG-2.0 at 1024,
    but 2.1 GiB more disk) only apply there, and `compile` (torch.compile) only
    to PyTorch.

    Weights problems raise the typed errors of `models.errors`, whatever the
    runtime. If OpenVINO fails to convert or compile, PyTorch serves instead
    and `runtime_reason` says why. The device and settings are checked before
    the (large) weights are read.
    """
    if resolution <= 0 or resolution % 32:
        raise ValueError(f"resolution must be a positive multiple of 32, got {resolution}")
    if batch_size < 1 or (threads is not None and threads < 1):
        raise ValueError(f"batch_size and threads must be >= 1, got {batch_size}, {threads}")
    if runtime.strip().lower() == "openvino":
        # checked before the device: a GPU-less machine would otherwise report the device
        if device.strip().lower().startswith("cuda"):
            raise _openvino_device_error(device)
        if device.strip().lower() == "auto":
            device = "cpu"
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    chosen, reason = select_runtime(runtime, dev, dtype, openvino_installed=openvino_available())
    if chosen == "openvino":
        precision = normalize_precision(str(dtype).removeprefix("torch."))
    model = load_birefnet(
        source, arch=arch, revision=revision, token=token, offline=offline, cache_dir=hub_cache_dir
    )
    if chosen == "openvino":
        try:
            ov_predictor = RMBGOpenVINOPredictor(
                model,
                resolution=resolution,
                batch_size=batch_size,
                precision=precision,
                threads=threads,
                cache_dir=cache_dir,
                compile_cache=compile_cache,
            )
        except Exception as exc:  # conversion/compilation: serve with PyTorch instead
            reason = f"openvino failed, torch serves: {exc}"
            log.warning("RMBG-2.0: %s", reason, exc_info=True)
        else:
            ov_predictor.runtime_reason = reason
            return ov_predictor
    predictor = RMBGPredictor(
        model, resolution=resolution, device=str(dev), dtype=torch_dtype, compile=compile
    )
    predictor.runtime_reason = reason
    return predictor
