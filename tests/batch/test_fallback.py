"""RMBG-2.0 in the job, with the real RMBG code: its failure falls back to U2-Net per image,
and the reason is recorded; with (synthetic) weights that load, it serves itself."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bgremove.batch import run_batch
from bgremove.batch_settings import BatchSettings
from bgremove.manifest import MANIFEST, Record
from deployments.settings import ServiceSettings
from models.registry import RMBG, U2NET
from tests.support.batch import PHOTOS
from tests.support.birefnet_weights import write_synthetic_checkpoint
from tests.support.shared import IMAGES

#: RMBG-2.0 as the service tests run it on CPUs: birefnet-lite at a small resolution, PyTorch
RMBG_ARGS = {"rmbg_arch": "birefnet-lite", "rmbg_resolution": 256, "rmbg_runtime": "torch"}


@pytest.fixture
def two_photos(shared_data: None, tmp_path: Path) -> Path:
    root = tmp_path / "two"
    root.mkdir()
    for name in PHOTOS[:2]:
        shutil.copy(IMAGES / name, root / name)
    return root


def _rmbg_job(service: ServiceSettings, rmbg_path: Path) -> tuple[ServiceSettings, BatchSettings]:
    service = ServiceSettings(
        **{**service.model_dump(exclude_unset=True), **RMBG_ARGS, "rmbg_path": str(rmbg_path)}
    )
    # RMBG-2.0 asked for on a cluster without GPUs: its actors run on CPUs
    settings = BatchSettings(model=RMBG, rmbg_actors=1, u2net_actors=1, rmbg_batch_size=2)
    return service, settings


def _records(dst: Path) -> list[Record]:
    return [Record.model_validate_json(line) for line in (dst / MANIFEST).read_text().splitlines()]


def test_rmbg_load_failure_falls_back_to_u2net_per_image(
    ray_cluster: str, two_photos: Path, tmp_path: Path, service_settings: ServiceSettings
) -> None:
    missing = tmp_path / "no-such-checkpoint" / "model.safetensors"
    service, settings = _rmbg_job(service_settings, missing)
    dst = tmp_path / "out"

    summary = run_batch(str(two_photos), str(dst), {}, settings, service)

    assert (summary.succeeded, summary.failed, summary.fallbacks) == (2, 0, 2)
    assert summary.models == {U2NET: 2}
    assert list(summary.stages) == [RMBG, U2NET]
    records = _records(dst)
    assert len(records) == 2
    for record in records:
        assert (record.status, record.model) == ("ok", U2NET)
        assert record.fallback_reason == "load_failed:weights_not_found"
        assert (dst / record.output).stat().st_size == record.output_bytes


def test_rmbg_serves_when_its_weights_load(
    ray_cluster: str, two_photos: Path, tmp_path: Path, service_settings: ServiceSettings
) -> None:
    checkpoint = write_synthetic_checkpoint(tmp_path / "rmbg", "birefnet-lite")
    service, settings = _rmbg_job(service_settings, checkpoint)
    dst = tmp_path / "out"

    summary = run_batch(str(two_photos), str(dst), {"format": "webp"}, settings, service)

    assert (summary.succeeded, summary.failed, summary.fallbacks) == (2, 0, 0)
    assert summary.models == {RMBG: 2}
    for record in _records(dst):
        assert (record.model, record.fallback_reason) == (RMBG, None)
        assert record.output.endswith(".webp") and (dst / record.output).is_file()
