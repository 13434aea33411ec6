"""In-process background removal: the service's predictor and pipeline, without Ray.

Settings are `bgremove.settings.cli_settings` (the BG_REMOVAL_* variables and `.env` file a
service operator already uses, with the CLI's flags on top), read once; the load configs,
weights resolution (with its progress bars), runtime choice and tuning cache are the
service's. One predictor serves every worker thread: its calls are serialised, while the
resizes to and from the model's input run outside the lock, as the service's ingress does
them, so other images' decode, compose and encode overlap the model. Refined edges compile
their kernels (numba) in a thread while the model loads (`warm_up_edges`): a one-image run
pays the two side by side, not one after the other.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bgremove.errors import FileError, SetupError
from bgremove.remover import Outcome
from imaging.errors import ImageError
from imaging.limits import Limits
from imaging.options import RenderOptions
from imaging.pipeline import MaskOutcome, remove_background
from imaging.render import refines_edges
from imaging.resize import ModelInputSpec
from models.errors import ModelError
from models.registry import MaskPredictor, get_tier, load_predictor
from models.settings import RemovalSettings

log = logging.getLogger(__name__)


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


def load_masker(settings: RemovalSettings, instances: int = 1) -> LocalMasker:
    """Load ``settings.model``'s predictor as the service's replica would (weights resolved,
    runtime chosen or read from the tuning cache, warmed up), ``instances`` times.

    Several instances share the CPUs (`bgremove.settings.cli_settings` splits them; see
    `--instances`).
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


def _warm_up_edges() -> None:
    try:
        from imaging.foreground import warmup

        warmup()
    except Exception as exc:  # the first image then meets the same error, and reports it
        log.debug("refined edges did not warm up: %s", exc)


def warm_up_edges(options: RenderOptions) -> threading.Thread | None:
    """Import and compile the refined-edge kernels (numba: about a second, once per process)
    in a thread, while the caller loads the model; None when ``options`` need none. The first
    image waits for what is left (numba's lock), and its bytes are the same either way."""
    if not refines_edges(options):
        return None
    thread = threading.Thread(target=_warm_up_edges, name="bgremove-edges", daemon=True)
    thread.start()
    return thread


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
