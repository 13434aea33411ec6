"""A batch job over a local folder of real photos, submitted to Ray as a job, then the same
command again: resumed, it does nothing twice."""

from __future__ import annotations

import argparse
import io
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from ray.job_submission import JobStatus, JobSubmissionClient

from bgremove import batch_command
from bgremove.batch import run_batch
from bgremove.batch_settings import BatchSettings
from bgremove.manifest import MANIFEST, PARTS_DIR, SUMMARY, Record
from deployments.settings import ServiceSettings
from tests.support.batch import CORRUPT_NAME, photo_names
from tests.support.shared import U2NETP

#: the service's settings of `service_settings`, as an operator would export them
SERVICE_ENV = {
    "BG_REMOVAL_U2NET_MODEL": "u2netp",
    "BG_REMOVAL_U2NET_PATH": str(U2NETP),
    "BG_REMOVAL_U2NET_RUNTIME": "onnxruntime",
    "BG_REMOVAL_U2NET_THREADS": "1",
    "BG_REMOVAL_U2NET_ALLOW_DOWNLOAD": "false",
    "BG_REMOVAL_U2NET_TUNING_CACHE_DIR": "",
}


def _records(dst: Path) -> dict[str, Record]:
    lines = (dst / MANIFEST).read_text().splitlines()
    records = [Record.model_validate_json(line) for line in lines]
    return {r.input: r for r in records}


def _outputs(dst: Path) -> dict[str, int]:
    """Output files (not the job's own) -> their modification time, ns."""
    return {
        p.relative_to(dst).as_posix(): p.stat().st_mtime_ns
        for p in dst.rglob("*")
        if p.is_file() and p.suffix == ".jpg"
    }


def _cli(argv: list[str]) -> argparse.Namespace:
    """Parse ``argv`` with a parser that has only ``batch``, as `bgremove.cli` registers it."""
    parser = argparse.ArgumentParser(prog="bgremove")
    batch_command.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


#: `bgremove batch ...` as a job's entrypoint runs it: `_cli`, in a process of its own
ENTRYPOINT = (
    "import argparse, sys; from bgremove import batch_command; "
    "p = argparse.ArgumentParser(prog='bgremove'); "
    "batch_command.add_parser(p.add_subparsers(dest='command', required=True)); "
    "a = p.parse_args(); sys.exit(a.func(a))"
)
JOB_FLAGS = ["--model", "u2net", "--u2net-actors", "1", "--u2net-batch-size", "4"]
JOB_FLAGS += ["--io-batch-size", "2", "--manifest-flush-s", "0.5"]
JOB_ENDED = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}


def _submit(dashboard: str, argv: list[str]) -> tuple[JobStatus, str]:
    """Run ``argv`` (``batch SRC DST ...``) as `ray job submit` does; its status and log."""
    client = JobSubmissionClient(dashboard)
    job = client.submit_job(
        entrypoint=shlex.join([sys.executable, "-c", ENTRYPOINT, *argv]),
        runtime_env={"env_vars": SERVICE_ENV},
    )
    deadline = time.monotonic() + 240
    seen: JobStatus | Exception | None = None
    while time.monotonic() < deadline:
        try:
            seen = client.get_job_status(job)
        except Exception as exc:  # a dashboard too busy to answer this once: ask again
            seen = exc
        if isinstance(seen, JobStatus) and seen in JOB_ENDED:
            return seen, client.get_job_logs(job)
        time.sleep(0.5)
    raise AssertionError(f"job {job} has not ended in 240 s: {seen!r}")


def test_folder_job_submitted_to_ray_then_resumed_does_nothing_twice(
    ray_cluster: str,
    photo_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    dst = tmp_path / "cutouts"
    argv = ["batch", str(photo_dir), str(dst), "--preset", "marketplace-white", *JOB_FLAGS]

    # on the cluster, as `ray job submit -- bgremove batch ...`: the job's driver finds the
    # cluster through RAY_ADDRESS; exit status 1 (one input failed), so Ray says FAILED
    status, log = _submit(ray_cluster, argv)

    assert status == JobStatus.FAILED, log
    assert "processed 4 (3 ok, 1 failed)" in log, log
    summary = json.loads((dst / SUMMARY).read_text())
    assert (summary["listed"], summary["ignored"]) == (4, 1)
    assert (summary["processed"], summary["succeeded"], summary["failed"]) == (4, 3, 1)
    assert summary["errors"] == {"unsupported_image": 1}
    assert summary["models"] == {"u2net": 3} and summary["fallbacks"] == 0
    first_run = summary["run_id"]
    records = _records(dst)
    assert sorted(records) == sorted(photo_names())
    assert {r.run_id for r in records.values()} == {first_run}
    for name in photo_names():
        record = records[name]
        if name == CORRUPT_NAME:
            assert record.status == "failed" and record.error_code == "unsupported_image"
            assert not (dst / record.output).exists()
            continue
        # the preset's output: same relative path, .jpg, 2000x2000 on white, the subject kept
        assert record.status == "ok" and record.model == "u2net" and record.error is None
        assert record.output == name.rsplit(".", 1)[0] + ".jpg"
        assert record.output_size == (2000, 2000) and record.input_size is not None
        assert set(record.timings_ms) >= {"decode", "mask", "compose", "encode", "write"}
        data = (dst / record.output).read_bytes()
        assert len(data) == record.output_bytes
        image = Image.open(io.BytesIO(data))
        assert (image.format, image.size) == ("JPEG", (2000, 2000))
        pixels = np.asarray(image.convert("RGB"), dtype=np.int16)
        corner = pixels[:40, :40]
        assert corner.min() >= 240 and corner.mean() >= 252, "the margin is white"
        assert (pixels.min(axis=2) < 200).mean() > 0.02, "the subject is there"
    assert not list((dst / PARTS_DIR).glob("*")), "parts are merged into the manifest"
    mtimes = _outputs(dst)
    manifest_before = (dst / MANIFEST).read_bytes()

    # the same command again, here (Ray is up: it is used): nothing is done again
    for name, value in SERVICE_ENV.items():
        monkeypatch.setenv(name, value)
    args = _cli(argv)
    assert args.func(args) == 0
    summary = json.loads((dst / SUMMARY).read_text())
    assert summary["run_id"] != first_run
    assert (summary["processed"], summary["succeeded"], summary["failed"]) == (0, 0, 0)
    assert (summary["skipped_done"], summary["skipped_failed"]) == (3, 1)
    assert (dst / MANIFEST).read_bytes() == manifest_before
    assert all(r.run_id == first_run for r in _records(dst).values())
    assert _outputs(dst) == mtimes
    assert "processed 0 (0 ok, 0 failed), skipped 3 done before and 1 failed" in (
        capsys.readouterr().out
    )


def test_nothing_to_do_starts_no_ray(
    photo_dir: Path, tmp_path: Path, service_settings: ServiceSettings
) -> None:
    """A folder without images: no cluster is needed, the summary is written all the same."""
    for name in photo_names():
        (photo_dir / name).unlink()
    dst = tmp_path / "out"
    summary = run_batch(str(photo_dir), str(dst), {}, BatchSettings(), service_settings)
    assert (summary.listed, summary.processed, summary.ignored) == (0, 0, 1)
    assert json.loads((dst / SUMMARY).read_text())["run_id"] == summary.run_id
    assert not (dst / MANIFEST).exists()
