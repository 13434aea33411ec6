"""In-process background removal: the service's predictor and pipeline, without Ray.

Settings come from `ServiceSettings` (the BG_REMOVAL_* variables and `.env` file a service
operator already uses), overridden by the CLI's flags, and are read once here; the load
configs, weights resolution (with its progress bars), runtime choice and tuning cache are
the service's. One predictor serves every worker thread: its calls are serialised, while
the resizes to and from the model's input run outside the lock, as the service's ingress
does them, so other images' decode, compose and encode overlap the model.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from bgremove.errors import FileError, SetupError
from bgremove.remover import Outcome
from deployments.settings import ServiceSettings, SettingsFileError
from imaging.errors import ImageError
from imaging.options import RenderOptions
from imaging.pipeline import Limits, MaskOutcome, remove_background
from imaging.resize import ModelInputSpec
from models.errors import ModelError
from models.hardware import usable_cpus
from models.registry import U2NET, MaskPredictor, get_tier, load_predictor
from models.u2net_weights import default_u2net_home

log = logging.getLogger(__name__)

#: the CLI's model when neither --model nor BG_REMOVAL_MODEL says: it runs on any CPU and
#: its weights download without an account (RMBG-2.0 is gated and slow without a GPU)
DEFAULT_MODEL = U2NET


def u2net_home(settings: ServiceSettings, override: Path | None = None) -> Path:
    """The U2-Net folder a CLI command works in: its ``--home``, else the settings'
    ``u2net_home``, else rembg's (``U2NET_HOME``, ``~/.u2net``)."""
    if override is not None:
        return override
    return Path(settings.u2net_home) if settings.u2net_home else default_u2net_home()


def cli_settings(
    model: str | None = None, threads: int | None = None, instances: int = 1
) -> ServiceSettings:
    """The service's settings (BG_REMOVAL_* variables), with the CLI's flags on top.

    In-process the CLI owns the machine: RMBG-2.0 gets every CPU unless a thread count is
    set (a service replica gets its Ray reservation); several model instances split the
    CPUs between them.
    """
    overrides: dict[str, Any] = {}
    if model is not None:
        overrides["model"] = model
    if threads is not None:
        overrides.update(u2net_threads=threads, rmbg_threads=threads)
    try:
        settings = ServiceSettings.load(**overrides)
    except (ValidationError, SettingsFileError) as exc:
        raise SetupError(f"invalid settings: {exc}", code="invalid_settings") from None
    update: dict[str, Any] = {}
    if "model" not in settings.model_fields_set:
        update["model"] = DEFAULT_MODEL
    share = max(1, usable_cpus() // instances)
    if settings.u2net_threads is None and instances > 1:
        update["u2net_threads"] = share
    if settings.rmbg_threads is None:
        update["rmbg_threads"] = share
    return settings.model_copy(update=update) if update else settings


class LocalMasker:
    """A `Masker` over a pool of in-process predictors (model instances), shared by worker
    threads: each call takes an idle instance, so at most one call runs per instance."""

    def __init__(self, predictors: Sequence[MaskPredictor], model: str, spec: ModelInputSpec):
        if not predictors:
            raise ValueError("a masker needs at least one predictor")
        self.predictors = tuple(predictors)
        self.model = model
        self.spec = spec
        self._idle: queue.SimpleQueue[MaskPredictor] = queue.SimpleQueue()
        for predictor in self.predictors:
            self._idle.put(predictor)

    def __call__(self, rgb: np.ndarray) -> MaskOutcome:
        small = self.spec.to_input(rgb)
        # one call per instance: an instance is multi-threaded itself (or one of several
        # 1-thread instances), and two calls on one would only split the same cores
        predictor = self._idle.get()
        try:
            mask = predictor.predict([small])[0]
        finally:
            self._idle.put(predictor)
        height, width = rgb.shape[:2]
        return MaskOutcome(self.spec.to_size(mask, height, width), self.model)


def load_masker(settings: ServiceSettings, instances: int = 1) -> LocalMasker:
    """Load ``settings.model``'s predictor as the service's replica would (weights resolved,
    runtime chosen or read from the tuning cache, warmed up), ``instances`` times.

    Several instances share the CPUs (`cli_settings` splits them; see `--instances`).
    Every instance after the first reuses the first one's measured runtime choice.
    """
    name = settings.model
    tier = get_tier(name)
    config = settings.load_config(name)
    started = time.perf_counter()
    predictors = []
    try:
        for _ in range(instances):
            predictors.append(load_predictor(name, config))
    except ModelError as exc:
        raise SetupError(f"{name} cannot load: {exc}", code=exc.code) from exc
    except (ValueError, OSError) as exc:
        raise SetupError(f"{name} cannot load: {exc}", code="model_load_failed") from exc
    log.info("%s loaded in %.1f s (%d instance(s))", name, time.perf_counter() - started, instances)
    return LocalMasker(predictors, name, tier.input_size(config, predictors[0]))


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
