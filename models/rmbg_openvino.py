"""RMBG-2.0 (BiRefNet) on the OpenVINO CPU runtime, with an on-disk cache of the converted graph.

Why: on a 2-core CPU, PyTorch fp32 needs 30-50 s per 1024 x 1024 image; the
same network compiled by OpenVINO runs 1.6x (AVX2 EPYC) to ~4x (AVX-512 Xeon)
faster, with masks equal to PyTorch's within float rounding. Converting costs minutes (a TorchScript
trace runs the network once at full size, then OpenVINO's frontend and graph
passes), so the converted graph (IR, `.xml` + `.bin`) is saved under a cache
directory, keyed by everything that changes the graph: the weights, the
config, the resolution, the batch size, the network's source code and the
versions of torch, OpenVINO and this conversion. Only the first start of a
replica (per node or per shared cache volume) pays for the conversion.

Pre- and postprocessing are exactly those of `RMBGPredictor` (shared
functions of `models.rmbg_transforms`), so both runtimes see the same network input and
round masks the same way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
import uuid
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from models.birefnet import BiRefNet
from models.files import publish, remove_stale_temporaries, staged_directory, write_atomic
from models.hardware import cpu_name
from models.hardware import usable_cpus as default_threads
from models.rmbg_transforms import check_images, logits_to_masks, normalization, resize_normalize

if TYPE_CHECKING:
    import openvino as ov

log = logging.getLogger(__name__)

#: bump when the conversion recipe changes in a way the other key parts do not capture
FORMAT_VERSION = 1
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
#: modules whose source decides the traced graph; an edit there invalidates the cache
_NETWORK_MODULES = ("models.birefnet", "models.birefnet_blocks", "models.swin")
_MODEL_FILE = "model.xml"
_META_FILE = "meta.json"


class OpenVINOBuildError(RuntimeError):
    """Conversion or compilation failed; the caller may fall back to PyTorch.

    The message starts with the stage ("conversion failed: ..." or
    "compilation failed: ...") so that health output says which one.
    """


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/bg-removal/openvino`, else `~/.cache/bg-removal/openvino`."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "bg-removal" / "openvino"


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


def weights_fingerprint(model: torch.nn.Module) -> str:
    """sha256 over every state-dict entry: name, dtype, shape and bytes.

    Hashing the tensors (about 1.2 s for RMBG-2.0's 844 MiB with SHA-NI) is
    exact whatever the weights came from (file, hub, built in memory) and
    does not depend on file paths or mtimes, which differ between nodes and
    re-downloads of the same file.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return digest.hexdigest()


def _network_code_hash() -> str:
    import importlib

    digest = hashlib.sha256()
    for name in _NETWORK_MODULES:
        module = importlib.import_module(name)
        digest.update(Path(module.__file__ or "").read_bytes())
    return digest.hexdigest()


def cache_key(model: BiRefNet, *, resolution: int, batch_size: int) -> tuple[str, dict[str, Any]]:
    """(hex key, the parts it hashes): everything that changes the converted graph."""
    import openvino as ov

    parts: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "openvino": ov.get_version(),
        "torch": torch.__version__,
        "config": dataclasses.asdict(model.config),
        "resolution": resolution,
        "batch_size": batch_size,
        "network_code": _network_code_hash(),
        "weights": weights_fingerprint(model),
    }
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest(), parts


def convert_birefnet(model: BiRefNet, resolution: int, batch_size: int = 1) -> ov.Model:
    """Static-shape OpenVINO model of `model` for (batch_size, 3, R, R) inputs.

    Traced here rather than by `openvino.convert_model` itself so that the
    trace is not checked: torch's trace check runs the network twice more,
    which at 1024 on a CPU doubles the conversion time. The shape-dependent
    Python branches of the network (window padding, shift masks) become
    constants, which is right for a static shape.
    """
    import openvino as ov

    x = torch.zeros(batch_size, 3, resolution, resolution)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.trace is deprecated
        traced = torch.jit.trace(model.eval(), x, check_trace=False, strict=False)
        return ov.convert_model(
            traced, example_input=x, input=[(batch_size, 3, resolution, resolution)]
        )


@dataclass
class CachedModel:
    """Where the converted graph is, and whether this process had to convert it."""

    key: str
    directory: Path
    #: IR file to compile; None when the cache could not be written (model kept in memory)
    path: Path | None
    hit: bool
    conversion_s: float | None
    model: ov.Model | None = None
    error: str | None = None


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Exclusive lock (filelock, as the INT8 build's), so replicas on one node or volume
    convert once, not all at once.

    Correctness does not depend on it (entries appear by atomic rename); it only saves CPU
    when several replicas start together, so a lock that cannot be taken is gone without.
    """
    from filelock import FileLock

    lock = FileLock(path)
    try:
        lock.acquire()
    except OSError as exc:  # a read-only cache: go on unlocked
        log.debug("no conversion lock at %s: %s", path, exc)
        yield
        return
    try:
        yield
    finally:
        lock.release()


def _complete(directory: Path) -> bool:
    return all((directory / n).is_file() for n in (_MODEL_FILE, "model.bin", _META_FILE))


def _discard(directory: Path) -> None:
    """Remove a cache entry (rename first, so readers never see half a directory)."""
    trash = directory.with_name(f".trash-{directory.name}-{uuid.uuid4().hex[:8]}")
    with contextlib.suppress(OSError):
        directory.rename(trash)
        shutil.rmtree(trash, ignore_errors=True)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str))


def load_or_convert(
    model: BiRefNet, *, resolution: int, batch_size: int, cache_dir: Path
) -> CachedModel:
    """The cached IR for this model and shape, converting (and saving) it on a miss.

    The entry is written into a temporary directory and renamed into place,
    so a crash or a concurrent replica never leaves a half-written entry
    under the final name. If the cache cannot be written, the converted
    model is returned in memory and the reason in `error`.
    """
    import openvino as ov

    key, parts = cache_key(model, resolution=resolution, batch_size=batch_size)
    name = f"{model.config.name}-r{resolution}-b{batch_size}-{key[:16]}"
    directory = cache_dir / name
    if _complete(directory):
        return CachedModel(key, directory, directory / _MODEL_FILE, True, None)

    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        lock: contextlib.AbstractContextManager[None] = _file_lock(cache_dir / f".{name}.lock")
    except OSError as exc:
        log.warning("OpenVINO cache %s is not writable (%s); converting in memory", cache_dir, exc)
        lock, cache_error = contextlib.nullcontext(), f"{type(exc).__name__}: {exc}"
    else:
        cache_error = None

    with lock:
        if _complete(directory):  # another replica converted it while we waited
            return CachedModel(key, directory, directory / _MODEL_FILE, True, None)
        log.info(
            "converting %s at %d to OpenVINO (one-time, cached in %s)", name, resolution, directory
        )
        start = time.perf_counter()
        try:
            ov_model = convert_birefnet(model, resolution, batch_size)
        except Exception as exc:
            raise OpenVINOBuildError(f"conversion failed: {type(exc).__name__}: {exc}") from exc
        seconds = time.perf_counter() - start
        if cache_error is not None:
            return CachedModel(key, directory, None, False, seconds, ov_model, cache_error)
        # crashed writers' entries hold a full IR each
        remove_stale_temporaries(directory)
        try:
            with staged_directory(directory) as tmp:
                # keep f32 weights: the default fp16 compression changes the masks
                ov.save_model(ov_model, str(tmp / _MODEL_FILE), compress_to_fp16=False)
                meta = {**parts, "key": key, "conversion_s": seconds, "created": time.time()}
                _write_json(tmp / _META_FILE, meta)
                if directory.exists() and not _complete(directory):
                    _discard(directory)  # a broken leftover would block the rename forever
                try:
                    publish(tmp, directory)
                except OSError:
                    if not _complete(directory):
                        raise  # else another writer won the race: theirs is kept
        except (OSError, RuntimeError) as exc:  # OpenVINO's writer says RuntimeError on a full disk
            log.warning("could not save the OpenVINO model to %s: %s", directory, exc)
            return CachedModel(
                key, directory, None, False, seconds, ov_model, f"{type(exc).__name__}: {exc}"
            )
        return CachedModel(key, directory, directory / _MODEL_FILE, False, seconds)


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
            _discard(entry.directory)
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
                _write_json(
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
