"""A model replica prepares every batch shape its batcher can send (compiled RMBG-2.0).

The replica class runs here without Serve; its predictor is a recorder of the calls the
replica makes (what is under test is when the replica asks, not the compilation).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from deployments.model_replica import ModelReplica
from deployments.settings import RecoveryConfig
from imaging.resize import ModelInputSpec


class _Recorder:
    def __init__(self) -> None:
        self.prepared: list[int] = []

    def predict(self, images: list[np.ndarray]) -> list[np.ndarray]:
        return [np.zeros(img.shape[:2], dtype=np.uint8) for img in images]

    def prepare_batches(self, max_batch_size: int) -> None:
        self.prepared.append(max_batch_size)


class _Replica(ModelReplica):
    model_name = "test"

    def __init__(self, recovery: RecoveryConfig) -> None:
        self.recorder = _Recorder()
        super().__init__(recovery)

    def _load(self) -> Any:
        return self.recorder

    def _describe(self) -> dict[str, Any]:
        return {}

    def _input_spec(self) -> ModelInputSpec | None:
        return None


def test_reconfigure_prepares_the_batch_shapes_before_traffic() -> None:
    replica = _Replica(RecoveryConfig(retry_initial_s=1, retry_max_s=2, grace_s=10))
    assert replica.recorder.prepared == []  # loaded in __init__: the batch size comes next
    replica.reconfigure({"max_batch_size": 4, "batch_wait_timeout_s": 0.01})
    assert replica.recorder.prepared == [4]
    replica.reconfigure({"max_batch_size": 16, "batch_wait_timeout_s": 0.01})  # a rollout
    assert replica.recorder.prepared == [4, 16]
