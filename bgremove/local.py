"""In-process background removal: the service's predictor and pipeline, without Ray.

Settings come from `ServiceSettings` (the BG_REMOVAL_* variables a service operator already
uses), overridden by the CLI's flags, and are read once here; the load configs, weights
resolution (with its progress bars), runtime choice and tuning cache are the service's. One
predictor serves every worker thread: its calls are serialised, while the resizes to and from
the model's input run outside the lock, as the service's ingress does them, so other images'
decode, compose and encode overlap the model.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import ValidationError

from bgremove.errors import FileError, SetupError
from bgremove.remover import Outcome
from deployments.settings import ServiceSettings
from imaging.errors import ImageError
from imaging.options import RenderOptions
from imaging.pipeline import Limits, MaskOutcome, remove_background
from imaging.resize import ModelInputSpec
from models.errors import ModelError
from models.hardware import usable_cpus
from models.registry import RMBG, U2NET, MaskPredictor, get_tier, load_predictor

log = logging.getLogger(__name__)

#: the CLI's model when neither --model nor BG_REMOVAL_MODEL says: it runs on any CPU and
#: its weights download without an account (RMBG-2.0 is gated and slow without a GPU)
DEFAULT_MODEL = U2NET


def cli_settings(model: str | None = None, threads: int | None = None) -> ServiceSettings:
    """The service's settings (BG_REMOVAL_* variables), with the CLI's flags on top.

    In-process the CLI owns the machine: RMBG-2.0 gets every CPU unless a thread count is
    set (a service replica gets its Ray reservation).
    """
    overrides: dict[str, Any] = {}
    if model is not None:
        overrides["model"] = model
    if threads is not None:
        overrides.update(u2net_threads=threads, rmbg_threads=threads)
    try:
        settings = ServiceSettings(**overrides)
    except ValidationError as exc:
        raise SetupError(f"invalid settings: {exc}", code="invalid_settings") from None
    update: dict[str, Any] = {}
    if "model" not in settings.model_fields_set:
        update["model"] = DEFAULT_MODEL
    if settings.rmbg_threads is None:
        update["rmbg_threads"] = usable_cpus()
    return settings.model_copy(update=update) if update else settings


@dataclass(frozen=True)
class LocalMasker:
    """A `Masker` over one in-process predictor, shared by worker threads."""

    predictor: MaskPredictor
    model: str
    spec: ModelInputSpec
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, rgb: np.ndarray) -> MaskOutcome:
        small = self.spec.to_input(rgb)
        # one model call at a time: the model is multi-threaded itself, and two calls
        # would only split the same cores (and OpenVINO serialises them anyway)
        with self.lock:
            mask = self.predictor.predict([small])[0]
        height, width = rgb.shape[:2]
        return MaskOutcome(self.spec.to_size(mask, height, width), self.model)


def load_masker(settings: ServiceSettings) -> LocalMasker:
    """Load ``settings.model``'s predictor as the service's replica would (weights resolved,
    runtime chosen or read from the tuning cache, warmed up)."""
    name = settings.model
    tier = get_tier(name)
    config = settings.rmbg_load_config() if name == RMBG else settings.u2net_load_config()
    started = time.perf_counter()
    try:
        predictor = load_predictor(name, config)
    except ModelError as exc:
        raise SetupError(f"{name} cannot load: {exc}", code=exc.code) from exc
    except (ValueError, OSError) as exc:
        raise SetupError(f"{name} cannot load: {exc}", code="model_load_failed") from exc
    log.info("%s loaded in %.1f s", name, time.perf_counter() - started)
    return LocalMasker(predictor, name, tier.input_size(config, predictor))


@dataclass(frozen=True)
class LocalRemover:
    """`Remover` running `imaging.pipeline.remove_background` here."""

    masker: LocalMasker
    options: RenderOptions
    limits: Limits
    background: bytes | None = None

    def __call__(self, data: bytes, name: str) -> Outcome:
        try:
            result = remove_background(
                data, self.options, self.masker, limits=self.limits, background=self.background
            )
        except ImageError as exc:
            raise FileError(exc.message, code=exc.code) from exc
        except ModelError as exc:
            raise FileError(str(exc), code=exc.code) from exc
        return Outcome(result.body, result.media_type, result.model, result.fallback_reason)
