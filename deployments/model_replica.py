"""What both model groups share: load, heal, batch requests, run batches serially, report state.

A replica whose model fails to load stays up and says why (in `status()` and in
the typed error every `predict` call raises), instead of crash-looping: the
ingress then falls back at once, and health shows the operator the reason.
A transient cause (network, hub 5xx, weights not there yet) is retried with
backoff in the background, so a blip heals without a redeploy; if it lasts past
the grace period, `check_health` fails and Serve replaces the replica. A
permanent cause (gated, checksum, mismatch) stays failed with its message.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from abc import ABC, abstractmethod
from collections import Counter
from typing import Any

import numpy as np
from ray import serve
from ray.serve.metrics import Counter as MetricCounter
from ray.serve.metrics import Histogram

from deployments.settings import RecoveryConfig
from imaging.resize import ModelInputSpec
from models.errors import ModelError
from models.registry import MaskPredictor

logger = logging.getLogger("ray.serve")


class ModelNotLoadedError(ModelError):
    """Raised by `predict` on a replica whose model failed to load."""

    def __init__(
        self, message: str, code: str = "model_error", replica_id: str | None = None
    ) -> None:
        # `message` alone in args: Ray pickles exceptions; the rest travels in __dict__.
        super().__init__(message)
        self.code = code
        self.replica_id = replica_id


class InjectedFaultError(ModelError):
    """Raised on purpose by the `chaos_error_rate` rollout setting (fallback drills)."""

    code = "injected_fault"


class ModelReplica(ABC):
    """Base of the RMBG-2.0 and U2-Net deployments.

    Subclasses implement `_load` (build the predictor; raise `ModelError` with an
    operator-facing message) and `_describe` (facts for health output).
    """

    #: the model name reported in X-Model-Used and in metrics
    model_name: str = ""

    def __init__(self, recovery: RecoveryConfig) -> None:
        self._recovery = recovery
        self._predictor: MaskPredictor | None = None
        self._load_error: ModelError | None = None
        self._load_attempts = 0
        self._first_failure_at: float | None = None
        self._next_retry_at: float | None = None
        self._stop = threading.Event()
        self._chaos_error_rate = 0.0
        self._chaos_counter = 0
        self._user_config: dict[str, Any] = {}
        self._batch_sizes: Counter[int] = Counter()
        self._started = time.monotonic()
        self._batch_hist = Histogram(
            "bg_removal_batch_size",
            description="Images per model batch.",
            boundaries=[1, 2, 3, 4, 6, 8, 12, 16, 32],
            tag_keys=("model",),
        )
        self._batch_hist.set_default_tags({"model": self.model_name})
        self._batch_latency = Histogram(
            "bg_removal_batch_latency_ms",
            description="Model time per batch, ms.",
            boundaries=[10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000],
            tag_keys=("model",),
        )
        self._batch_latency.set_default_tags({"model": self.model_name})
        self._errors = MetricCounter(
            "bg_removal_model_errors",
            description="Batches that raised, by error code.",
            tag_keys=("model", "code"),
        )
        self._errors.set_default_tags({"model": self.model_name})
        if not self._try_load() and self._retryable():
            threading.Thread(target=self._retry_loop, name="model-load-retry", daemon=True).start()

    def _try_load(self) -> bool:
        """One load attempt; True when the model is ready."""
        self._load_attempts += 1
        try:
            predictor = self._load()
            if self._user_config:  # loaded after start (a retry): reconfigure has run
                self._prepare_batches(predictor)
        except ModelError as exc:
            self._note_failure(exc)
            logger.error("%s failed to load (%s): %s", self.model_name, exc.code, exc)
            return False
        except Exception as exc:  # an unexpected bug must not crash-loop the replica
            self._note_failure(ModelError(f"{type(exc).__name__}: {exc}"))
            logger.exception("%s failed to load with an unexpected error", self.model_name)
            return False
        self._predictor, self._load_error = predictor, None
        self._first_failure_at = self._next_retry_at = None
        logger.info(
            "%s loaded (attempt %d): %s", self.model_name, self._load_attempts, self._describe()
        )
        return True

    def _note_failure(self, exc: ModelError) -> None:
        self._load_error = exc
        if self._first_failure_at is None:
            self._first_failure_at = time.monotonic()

    def _retryable(self) -> bool:
        return self._load_error is not None and self._load_error.transient

    def _retry_loop(self) -> None:
        """Retry a transient load failure with exponential backoff until it loads."""
        delay = self._recovery.retry_initial_s
        while self._retryable():
            self._next_retry_at = time.monotonic() + delay
            if self._stop.wait(delay):
                return
            self._next_retry_at = None
            if self._try_load():
                return
            delay = min(delay * 2, self._recovery.retry_max_s)

    @property
    def load_state(self) -> str:
        """`ready`, `loading` (a transient failure being retried) or `failed` (permanent)."""
        if self._predictor is not None:
            return "ready"
        return "loading" if self._retryable() or self._load_error is None else "failed"

    def check_health(self) -> None:
        """Serve replaces this replica when a transient load failure outlasts the grace period."""
        if self._retryable() and self._first_failure_at is not None:
            failing_for = time.monotonic() - self._first_failure_at
            if failing_for > self._recovery.grace_s:
                raise RuntimeError(
                    f"{self.model_name} has not loaded for {failing_for:.0f} s "
                    f"({self._load_error}); replacing the replica"
                )

    def __del__(self) -> None:
        self._stop.set()

    @abstractmethod
    def _load(self) -> MaskPredictor:
        """Build and warm up the predictor."""

    @abstractmethod
    def _describe(self) -> dict[str, Any]:
        """Facts about the loaded model for health output (device, weights, ...)."""

    @abstractmethod
    def _input_spec(self) -> ModelInputSpec | None:
        """How the ingress should resize photos for this model (None: not loaded yet)."""

    def reconfigure(self, config: dict[str, Any]) -> None:
        """Apply rollout settings in place: batch size and wait, chaos drill rate."""
        self.predict.set_max_batch_size(int(config.get("max_batch_size", 8)))
        self.predict.set_batch_wait_timeout_s(float(config.get("batch_wait_timeout_s", 0.01)))
        self._chaos_error_rate = float(config.get("chaos_error_rate", 0.0))
        self._user_config = dict(config)
        if self._predictor is not None:
            self._prepare_batches(self._predictor)
        logger.info("%s reconfigured: %s", self.model_name, config)

    def _prepare_batches(self, predictor: MaskPredictor) -> None:
        """A predictor that compiles per batch shape (RMBG-2.0 with torch.compile: about 2
        minutes a shape) meets every shape the batcher can send before a request does; Serve
        runs the first `reconfigure` before the replica takes traffic."""
        prepare = getattr(predictor, "prepare_batches", None)
        if prepare is not None:
            prepare(self.predict._get_max_batch_size())

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def predict(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """One mask per image; requests arriving together run as one batch."""
        if self._predictor is None:
            error = self._load_error or ModelError("model not loaded")
            replica_id = serve.get_replica_context().replica_id.unique_id
            raise ModelNotLoadedError(str(error), error.code, replica_id)
        self._batch_sizes[len(images)] += 1
        self._batch_hist.observe(len(images))
        self._maybe_inject_fault()
        start = time.perf_counter()
        try:
            # A worker thread keeps the event loop free for status calls and for
            # queueing the next batch; max_concurrent_batches=1 keeps runs serial.
            masks = await asyncio.to_thread(self._predictor.predict, images)
        except ModelError as exc:
            self._errors.inc(tags={"code": exc.code})
            raise
        except Exception as exc:
            self._errors.inc(tags={"code": type(exc).__name__})
            translated = self._translate(exc)
            if translated is exc:
                raise
            raise translated from exc
        self._batch_latency.observe((time.perf_counter() - start) * 1000)
        return masks

    def _translate(self, exc: Exception) -> Exception:
        """Subclasses turn backend-specific failures (e.g. CUDA OOM) into typed errors."""
        return exc

    def _maybe_inject_fault(self) -> None:
        # Deterministic: with rate r, every round(1/r)-th batch fails.
        if self._chaos_error_rate <= 0:
            return
        self._chaos_counter += 1
        period = max(1, round(1 / self._chaos_error_rate))
        if self._chaos_counter % period == 0:
            raise InjectedFaultError("fault injected by chaos_error_rate (rollout setting)")

    async def status(self) -> dict[str, Any]:
        """This replica's state, for the ingress's health endpoint and for operators."""
        context = serve.get_replica_context()
        spec = self._input_spec() if self._predictor is not None else None
        info: dict[str, Any] = {
            "model": self.model_name,
            "loaded": self._predictor is not None,
            "state": self.load_state,
            "load_attempts": self._load_attempts,
            "next_retry_in_s": (
                None
                if self._next_retry_at is None
                else round(max(0.0, self._next_retry_at - time.monotonic()), 1)
            ),
            "input_spec": spec.as_dict() if spec is not None else None,
            "replica_id": context.replica_id.unique_id,
            "pid": os.getpid(),
            "uptime_s": round(time.monotonic() - self._started, 1),
            "max_batch_size": self.predict._get_max_batch_size(),
            "batch_wait_timeout_s": self.predict._get_batch_wait_timeout_s(),
            "batches": {str(k): v for k, v in sorted(self._batch_sizes.items())},
            "user_config": self._user_config,
        }
        if self._load_error is not None:
            info["error"] = {"code": self._load_error.code, "message": str(self._load_error)}
        info.update(self._describe())
        return info
