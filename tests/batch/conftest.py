"""Fixtures of the batch job tests: a Ray cluster of their own, real photos, real models.

The cluster is started here (``address="local"``: never another session's cluster) with a
few logical CPUs, once for the package, and shut down after it, so later test packages can
start theirs. Masks come from the real u2netp weights on ONNX Runtime with one thread,
pinned, so no runtime candidates are timed.
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray

from bgremove.batch_settings import BatchSettings
from deployments.settings import ServiceSettings
from tests.support.batch import CORRUPT_BYTES, CORRUPT_NAME, PHOTOS, photo_names
from tests.support.shared import IMAGES, U2NETP


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="package")
def ray_cluster(shared_data: None) -> Iterator[str]:
    """A local Ray of 3 logical CPUs (decode, finish and one model actor side by side) with
    its dashboard, which takes job submissions; yields the dashboard's address."""
    port = _free_port()
    ray.init(
        address="local",
        num_cpus=3,
        num_gpus=0,
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        dashboard_port=port,
        logging_level="warning",
        log_to_driver=False,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        ray.shutdown()


@pytest.fixture
def service_settings(shared_data: None, tmp_path: Path) -> ServiceSettings:
    """The service's settings for the real u2netp, runtime and threads pinned."""
    return ServiceSettings(
        u2net_model="u2netp",
        u2net_path=str(U2NETP),
        u2net_runtime="onnxruntime",
        u2net_threads=1,
        u2net_allow_download=False,
        u2net_tuning_cache_dir="",
        rmbg_cache_dir=str(tmp_path / "openvino"),
    )


@pytest.fixture
def batch_settings() -> BatchSettings:
    """Small batches, one U2-Net actor, the manifest flushed often (parts get written)."""
    return BatchSettings(
        model="u2net", u2net_actors=1, u2net_batch_size=4, io_batch_size=2, manifest_flush_s=0.5
    )


@pytest.fixture
def photo_dir(shared_data: None, tmp_path: Path) -> Path:
    """A folder of real photos (one in a sub-folder), a corrupt image and a text file."""
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    for rel, name in zip(photo_names(), PHOTOS, strict=False):
        shutil.copy(IMAGES / name, root / rel)
    (root / CORRUPT_NAME).write_bytes(CORRUPT_BYTES)
    (root / "notes.txt").write_text("not an image: ignored\n")
    return root
