"""RMBG-2.0 (BiRefNet) on the OpenVINO CPU runtime: precision choice and the predictor.

Why: on a 2-core CPU, PyTorch fp32 needs 30-50 s per 1024 x 1024 image; the same network
compiled by OpenVINO runs 1.6x (AVX2 EPYC) to ~4x (AVX-512 Xeon) faster, with masks equal
to PyTorch's within float rounding. The converted graph comes from the on-disk cache of
`models.rmbg_openvino_cache` (converted once per node or shared volume); here it is
compiled at the precision measured fastest within tolerance on this CPU.

Pre- and postprocessing are exactly those of `RMBGPredictor` (shared
functions of `models.rmbg_transforms`), so both runtimes see the same network input and
round masks the same way.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from models.birefnet import BiRefNet
from models.hardware import cpu_name
from models.hardware import usable_cpus as default_threads
from models.rmbg_openvino_cache import (
    CachedModel,
    OpenVINOBuildError,
    default_cache_dir,
    discard,
    load_or_convert,
    write_json,
)
from models.rmbg_transforms import check_images, logits_to_masks, normalization, resize_normalize

if TYPE_CHECKING:
    import openvino as ov

log = logging.getLogger(__name__)

#: largest mean |mask difference| from f32 (0-255 scale) a faster precision may have
MASK_TOLERANCE = 1.0
PRECISIONS = ("f32", "bf16")
_ALIASES = {
    "auto": "auto",
    "f32": "f32",
    "fp32": "f32",
    "float32": "f32",
    "bf16": "bf16",
    "bfloat16": "bf16",
}


def normalize_precision(precision: str) -> str:
    """'auto', or an OpenVINO precision name ('f32', 'bf16') from its common spellings."""
    name = _ALIASES.get(str(precision).strip().lower())
    if name is None:
        raise ValueError(
            f"unsupported OpenVINO precision {precision!r}; use 'auto', 'f32' or 'bf16'"
        )
    return name


def precision_candidates(capabilities: Sequence[str]) -> list[str]:
    """f32 always; bf16 only where the CPU has native bf16 (emulated bf16 is slower)."""
    return ["f32", "bf16"] if "BF16" in capabilities else ["f32"]


def choose_precision(timings_s: dict[str, float], mask_diff: dict[str, float]) -> str:
    """The fastest candidate whose mean mask difference from f32 is within MASK_TOLERANCE."""
    ok = [p for p in timings_s if p == "f32" or mask_diff.get(p, np.inf) <= MASK_TOLERANCE]
    return min(ok, key=lambda p: timings_s[p])


def compile_config(threads: int, precision: str, blob_cache: Path | None = None) -> dict[str, str]:
    """The CPU plugin's settings for BiRefNet: one latency stream on `threads` cores."""
    config = {
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": "1",
        "INFERENCE_NUM_THREADS": str(threads),
        "INFERENCE_PRECISION_HINT": precision,
        # replicas on one node would share the first cores if pinned (models/u2net_tuning.py)
        "ENABLE_CPU_PINNING": "NO",
        # the default snippets path failed on the masked SDPA of the shifted windows
        # (issue 9) and, where it compiles, is slower here
        "SNIPPETS_MODE": "DISABLE",
    }
    if blob_cache is not None:
        config["CACHE_DIR"] = str(blob_cache)
    return config


def probe_image(resolution: int) -> np.ndarray:
    """Deterministic photo-like RGB input (gradients, a disk, texture) for precision checks.

    A blank image would give a near-constant mask and hide precision errors.
    """
    r = resolution
    yy, xx = np.mgrid[0:r, 0:r].astype(np.float32) / max(r - 1, 1)
    disk = ((yy - 0.55) ** 2 + (xx - 0.45) ** 2 < 0.08).astype(np.float32)
    noise = np.random.default_rng(0).random((r, r, 3), dtype=np.float32)
    img = np.stack((xx, yy, 1.0 - xx * yy), axis=-1) * 0.6
    img += disk[..., None] * np.array([0.35, 0.1, -0.3], dtype=np.float32) + 0.15 * noise
    return (np.clip(img, 0.0, 1.0) * 255.0).round().astype(np.uint8)


class RMBGOpenVINOPredictor:
    """Background-removal masks from BiRefNet compiled by OpenVINO for the CPU.

    Same contract as `RMBGPredictor.predict`: RGB uint8 images of any size in,
    uint8 masks at each image's own size out. The graph has one static shape
    (`batch_size`, default 1); larger requests run chunk by chunk, the last
    chunk zero-padded.

    `precision="auto"` times a warm run of each candidate (f32, plus bf16 where
    the CPU has native bf16) on a probe image and keeps the fastest one whose
    mask stays within MASK_TOLERANCE of f32's; the choice is cached next to the
    model per CPU model name and thread count.
    """

    runtime = "openvino"

    def __init__(
        self,
        model: BiRefNet,
        *,
        resolution: int = 1024,
        batch_size: int = 1,
        precision: str = "auto",
        threads: int | None = None,
        cache_dir: str | Path | None = None,
        compile_cache: bool = False,
    ) -> None:
        if resolution <= 0 or resolution % 32:
            raise ValueError(f"resolution must be a positive multiple of 32, got {resolution}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        requested = normalize_precision(precision)

        import openvino as ov

        self.arch = model.config.name
        self.resolution = resolution
        self.batch_size = batch_size
        self.device = torch.device("cpu")
        self.threads = threads or default_threads()
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        self.compile_cache = compile_cache
        self.openvino_version = ov.get_version()
        self.cpu = cpu_name()
        self.runtime_reason = "openvino requested"
        self.warmup_s: float | None = None
        self._shift, self._scale = normalization(self.device)
        self._lock = threading.Lock()
        self._core = ov.Core()

        entry = load_or_convert(
            model, resolution=resolution, batch_size=batch_size, cache_dir=self.cache_dir
        )
        start = time.perf_counter()
        try:
            compiled, entry = self._select(entry, model, requested)
        except OpenVINOBuildError:
            raise
        except Exception as exc:
            raise OpenVINOBuildError(f"compilation failed: {type(exc).__name__}: {exc}") from exc
        #: compilation, plus the precision measurement when one ran
        self.compile_s = time.perf_counter() - start
        self.cache_hit = entry.hit
        self.conversion_s = entry.conversion_s
        self.cache_key = entry.key
        self.cache_file = entry.path
        self.cache_error = entry.error
        self._compiled = compiled
        self._request = compiled.create_infer_request()
        hint = compiled.get_property("INFERENCE_PRECISION_HINT")
        #: what the plugin really runs (bf16 asked on a CPU without it may read back f32)
        self.precision_effective = getattr(hint, "to_string", lambda: str(hint))()
        self.dtype = torch.bfloat16 if self.precision == "bf16" else torch.float32

    # -- compilation and precision -------------------------------------------------------

    def _compile(self, entry: CachedModel, precision: str) -> ov.CompiledModel:
        source: Any = str(entry.path) if entry.path is not None else entry.model
        blobs = entry.directory / "compiled" if self.compile_cache and entry.path else None
        config = compile_config(self.threads, precision, blobs)
        return self._core.compile_model(source, "CPU", config)

    def _readable(self, path: Path) -> bool:
        try:
            self._core.read_model(str(path))
        except Exception:
            return False
        return True

    def _compile_entry(
        self, entry: CachedModel, model: BiRefNet, precision: str
    ) -> tuple[ov.CompiledModel, CachedModel]:
        """Compile; a cached entry that cannot be read is discarded and converted again.

        A readable entry that fails to compile is kept: converting again would
        not help, and the caller falls back to PyTorch.
        """
        try:
            return self._compile(entry, precision), entry
        except Exception as exc:
            if not entry.hit or entry.path is None or self._readable(entry.path):
                raise
            log.warning(
                "cached OpenVINO model %s is unusable (%s); converting again", entry.directory, exc
            )
            discard(entry.directory)
            entry = load_or_convert(
                model,
                resolution=self.resolution,
                batch_size=self.batch_size,
                cache_dir=self.cache_dir,
            )
            return self._compile(entry, precision), entry

    def _choice_file(self, entry: CachedModel) -> Path:
        slug = re.sub(r"[^A-Za-z0-9]+", "-", self.cpu).strip("-").lower() or "cpu"
        return entry.directory / f"precision-{slug}-t{self.threads}.json"

    def _select(
        self, entry: CachedModel, model: BiRefNet, requested: str
    ) -> tuple[ov.CompiledModel, CachedModel]:
        """Compile the requested precision, or measure the candidates (or reuse a measurement)."""
        capabilities = list(self._core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
        self.precision_candidates = precision_candidates(capabilities)
        self.precision_timings_s: dict[str, float] = {}
        self.precision_mask_diff: dict[str, float] = {}
        if requested != "auto":
            self.precision, self.precision_source = requested, "pinned"
            return self._compile_entry(entry, model, requested)
        if len(self.precision_candidates) == 1:
            self.precision, self.precision_source = "f32", "only candidate (no native bf16)"
            return self._compile_entry(entry, model, "f32")

        choice_file = self._choice_file(entry)
        with contextlib.suppress(OSError, ValueError, KeyError):
            saved = json.loads(choice_file.read_text())
            if saved["candidates"] == self.precision_candidates and saved["choice"] in PRECISIONS:
                self.precision, self.precision_source = saved["choice"], "cached measurement"
                self.precision_timings_s = saved["timings_s"]
                self.precision_mask_diff = saved["mask_mean_diff"]
                return self._compile_entry(entry, model, self.precision)

        probe = [probe_image(self.resolution)]
        best: ov.CompiledModel | None = None
        reference: np.ndarray | None = None
        for precision in self.precision_candidates:
            compiled, entry = self._compile_entry(entry, model, precision)
            request = compiled.create_infer_request()
            x = self._preprocess(probe)
            request.infer({0: x})  # first run: allocations, kernel selection
            start = time.perf_counter()
            request.infer({0: x})
            self.precision_timings_s[precision] = time.perf_counter() - start
            logits = torch.from_numpy(request.get_output_tensor(0).data.copy())
            mask = logits_to_masks(logits[:1], [(self.resolution, self.resolution)])[0]
            if reference is None:
                reference = mask.astype(np.int16)
            diff = float(np.abs(mask.astype(np.int16) - reference).mean())
            self.precision_mask_diff[precision] = diff
            chosen = choose_precision(self.precision_timings_s, self.precision_mask_diff)
            if chosen == precision:
                best = compiled
            del request, compiled
        self.precision = choose_precision(self.precision_timings_s, self.precision_mask_diff)
        self.precision_source = "measured"
        assert best is not None
        if entry.path is not None:
            try:
                write_json(
                    choice_file,
                    {
                        "cpu": self.cpu,
                        "threads": self.threads,
                        "candidates": self.precision_candidates,
                        "choice": self.precision,
                        "timings_s": self.precision_timings_s,
                        "mask_mean_diff": self.precision_mask_diff,
                        "tolerance": MASK_TOLERANCE,
                    },
                )
            except OSError as exc:
                log.warning("could not save the precision choice to %s: %s", choice_file, exc)
        log.info(
            "OpenVINO precision %s (warm probe s %s, mean mask diff vs f32 %s)",
            self.precision,
            self.precision_timings_s,
            self.precision_mask_diff,
        )
        return best, entry

    # -- inference -----------------------------------------------------------------------

    def _preprocess(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Same resize and normalisation as RMBGPredictor; zero-padded to the static batch."""
        # torch.from_numpy needs a writable array with positive strides; most images are
        views = [
            torch.from_numpy(
                img if img.flags.c_contiguous and img.flags.writeable else np.array(img)
            )
            .permute(2, 0, 1)
            .unsqueeze(0)
            for img in images
        ]
        with torch.inference_mode():
            x = resize_normalize(views, self.resolution, self._shift, self._scale, self.batch_size)
        return x.contiguous().numpy()

    def predict_logits(self, x: np.ndarray) -> np.ndarray:
        """Raw network output for one normalized (batch_size, 3, R, R) float32 batch."""
        with self._lock:  # one infer request: calls from several threads take turns
            self._request.infer({0: x})
            return self._request.get_output_tensor(0).data.copy()

    def predict(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Alpha masks (HxW uint8, 0..255) for RGB HxWx3 uint8 images of any sizes."""
        if not images:
            return []
        check_images(images)
        masks: list[np.ndarray] = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            logits = self.predict_logits(self._preprocess(chunk))[: len(chunk)]
            with torch.inference_mode():
                masks += logits_to_masks(
                    torch.from_numpy(logits), [(img.shape[0], img.shape[1]) for img in chunk]
                )
        return masks

    def warmup(self, batch_size: int = 1) -> None:
        """Run blank images once so that first-request latency is not paid by a user."""
        img = np.zeros((self.resolution, self.resolution, 3), dtype=np.uint8)
        start = time.perf_counter()
        self.predict([img] * batch_size)
        self.warmup_s = time.perf_counter() - start

    def describe(self) -> dict[str, Any]:
        """Facts for health output: what serves, at which precision, and what start-up cost."""
        return {
            "runtime": self.runtime,
            "runtime_reason": self.runtime_reason,
            "device": str(self.device),
            "arch": self.arch,
            "resolution": self.resolution,
            "batch_size": self.batch_size,
            "precision": self.precision,
            "precision_effective": self.precision_effective,
            "precision_source": self.precision_source,
            "precision_candidates": list(self.precision_candidates),
            "precision_timings_s": dict(self.precision_timings_s),
            "precision_mask_diff": dict(self.precision_mask_diff),
            "threads": self.threads,
            "cpu": self.cpu,
            "openvino": self.openvino_version,
            "cache_hit": self.cache_hit,
            "conversion_s": self.conversion_s,
            "compile_s": self.compile_s,
            "compile_cache": self.compile_cache,
            "cache_file": str(self.cache_file) if self.cache_file else None,
            "cache_error": self.cache_error,
            "warmup_s": self.warmup_s,
        }
