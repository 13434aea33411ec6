"""The on-disk cache of RMBG-2.0 converted to OpenVINO: conversion, key, atomic entries.

Converting costs minutes (a TorchScript trace runs the network once at full size, then
OpenVINO's frontend and graph passes), so the converted graph (IR, `.xml` + `.bin`) is
saved under a cache directory, keyed by everything that changes the graph: the weights, the
config, the resolution, the batch size, the network's source code and the versions of
torch, OpenVINO and this conversion. Only the first start of a replica (per node or per
shared cache volume) pays for the conversion; `models.rmbg_openvino` compiles what is here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from models.birefnet import BiRefNet
from models.files import publish, remove_stale_temporaries, staged_directory, write_atomic

if TYPE_CHECKING:
    import openvino as ov

log = logging.getLogger(__name__)

#: bump when the conversion recipe changes in a way the other key parts do not capture
FORMAT_VERSION = 1
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


def discard(directory: Path) -> None:
    """Remove a cache entry (rename first, so readers never see half a directory)."""
    trash = directory.with_name(f".trash-{directory.name}-{uuid.uuid4().hex[:8]}")
    with contextlib.suppress(OSError):
        directory.rename(trash)
        shutil.rmtree(trash, ignore_errors=True)


def write_json(path: Path, data: dict[str, Any]) -> None:
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
                write_json(tmp / _META_FILE, meta)
                if directory.exists() and not _complete(directory):
                    discard(directory)  # a broken leftover would block the rename forever
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
