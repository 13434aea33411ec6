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

from bgremove.batch import BatchSettings
from deployments.settings import ServiceSettings

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
IMAGES = SHARED / "images"
U2NETP = SHARED / "models" / "u2netp.onnx"
#: small real photos (400x267 .. 770x595): real work, a few seconds in all
PHOTOS = ("hockey.png", "whisk.png", "horse.jpg")
#: not an image: a text file under an image name, as a broken upload looks
CORRUPT_NAME = "broken.jpg"
CORRUPT_BYTES = b"this is not a JPEG, only its name says so\n" * 8


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="package")
def ray_cluster() -> Iterator[str]:
    """A local Ray of 3 logical CPUs (decode, finish and one model actor side by side) with
    its dashboard, which takes job submissions; yields the dashboard's address."""
    if not U2NETP.is_file():
        pytest.fail(f"the real u2netp weights are missing: {U2NETP}")
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
def service_settings(tmp_path: Path) -> ServiceSettings:
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


def photo_names() -> list[str]:
    """The inputs as the job names them: the photos, one in a sub-folder, and the corrupt one."""
    return [PHOTOS[0], PHOTOS[1], f"sub/{PHOTOS[2]}", CORRUPT_NAME]


@pytest.fixture
def photo_dir(tmp_path: Path) -> Path:
    """A folder of real photos (one in a sub-folder), a corrupt image and a text file."""
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    for rel, name in zip(photo_names(), PHOTOS, strict=False):
        shutil.copy(IMAGES / name, root / rel)
    (root / CORRUPT_NAME).write_bytes(CORRUPT_BYTES)
    (root / "notes.txt").write_text("not an image: ignored\n")
    return root
