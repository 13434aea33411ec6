"""The RMBG-2.0 replica group: BiRefNet on a (fractional) GPU, requests batched.

Loads the weights once at start (local path, or the hub with `HF_TOKEN`),
warms up, then serves padded batches. Load failures and CUDA out-of-memory are
typed errors, which the ingress turns into a fallback to U2-Net.
"""

from __future__ import annotations

from typing import Any

import ray
from ray import serve

from deployments.model_replica import MaskPredictor, ModelReplica
from deployments.settings import RecoveryConfig, RMBGLoadConfig
from imaging.resize import ModelInputSpec
from models.errors import OutOfMemoryError


@serve.deployment(name="RMBG2", max_ongoing_requests=32, health_check_period_s=10)
class RMBGDeployment(ModelReplica):
    """BiRefNet (RMBG-2.0 checkpoint) behind `@serve.batch`."""

    model_name = "rmbg-2.0"

    def __init__(self, config: RMBGLoadConfig, recovery: RecoveryConfig) -> None:
        self._config = config
        super().__init__(recovery)

    def _load(self) -> MaskPredictor:
        # Imported here so that only RMBG-2.0 replicas pay for importing torch.
        from models.rmbg import load_rmbg_predictor

        c = self._config
        # `cuda` without a GPU raises DeviceUnavailableError before any weights are read;
        # on a CPU, `runtime: auto` converts to OpenVINO (cached on disk) or says why not.
        predictor = load_rmbg_predictor(
            c.source,
            arch=c.arch,
            resolution=c.resolution,
            device=c.device,
            dtype=c.dtype,
            compile=c.compile,
            revision=c.revision,
            runtime=c.runtime,
            cache_dir=c.cache_dir,
            threads=c.threads,
        )
        predictor.warmup(1)
        return predictor

    def _describe(self) -> dict[str, Any]:
        import torch

        c = self._config
        info: dict[str, Any] = {
            "weights": c.source + (f"@{c.revision}" if c.revision else ""),
            "arch": c.arch,
            "resolution": c.resolution,
            "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
            "gpu_available": torch.cuda.is_available(),
            "gpu_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "device": c.device,
        }
        predictor = self._predictor
        if predictor is not None:
            # runtime (and why), device, precision and how it was chosen, cache, timings
            info.update(predictor.describe())
        return info

    def _input_spec(self) -> ModelInputSpec | None:
        # Pillow's antialiased bilinear, as the reference pipeline (torchvision Resize on a
        # PIL image) does; the predictor's own resize of an R x R input is then the identity.
        r = self._config.resolution
        return ModelInputSpec(width=r, height=r, downscale="bilinear", upscale="bilinear")

    def _translate(self, exc: Exception) -> Exception:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            torch.cuda.empty_cache()
            return OutOfMemoryError(
                "CUDA out of memory in RMBG-2.0: lower rmbg_max_batch_size or give each "
                f"replica a larger GPU share ({exc})"
            )
        return exc
