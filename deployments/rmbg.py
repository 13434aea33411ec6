"""The RMBG-2.0 replica group: BiRefNet on a (fractional) GPU, requests batched.

Loads the weights once at start (local path, or the hub with `HF_TOKEN`),
warms up, then serves padded batches. Load failures and CUDA out-of-memory are
typed errors, which the ingress turns into a fallback to U2-Net.
"""

from __future__ import annotations

from typing import Any

import ray
from ray import serve

from deployments.model_replica import ModelReplica
from deployments.settings import RecoveryConfig
from imaging.resize import ModelInputSpec
from models.cuda_oom import translate_cuda_oom
from models.registry import RMBG, MaskPredictor, RMBGLoadConfig, get_tier, load_predictor


@serve.deployment(name="RMBG2", max_ongoing_requests=32, health_check_period_s=10)
class RMBGDeployment(ModelReplica):
    """BiRefNet (RMBG-2.0 checkpoint) behind `@serve.batch`."""

    model_name = RMBG

    def __init__(self, config: RMBGLoadConfig, recovery: RecoveryConfig) -> None:
        self._config = config
        super().__init__(recovery)

    def _load(self) -> MaskPredictor:
        return load_predictor(RMBG, self._config)

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
        return get_tier(RMBG).input_size(self._config, self._predictor)

    def _translate(self, exc: Exception) -> Exception:
        return translate_cuda_oom(
            exc,
            "CUDA out of memory in RMBG-2.0: lower rmbg_max_batch_size or give each "
            "replica a larger GPU share",
        )
