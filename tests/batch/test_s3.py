"""A batch job from S3 to S3 against a real S3-compatible server (moto's, on 127.0.0.1)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from bgremove.batch import run_batch
from bgremove.batch_settings import BatchSettings
from bgremove.manifest import MANIFEST, PARTS_DIR, SUMMARY, Record
from deployments.settings import ServiceSettings
from tests.support.batch import CORRUPT_NAME, photo_names

KEYS = {"s3_access_key_id": "test-key", "s3_secret_access_key": "test-secret"}
BUCKET = "catalogue"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server in this process, reachable by the Ray workers on 127.0.0.1."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def _client(endpoint: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=KEYS["s3_access_key_id"],
        aws_secret_access_key=KEYS["s3_secret_access_key"],
        region_name="us-east-1",
    )


def _objects(client: Any, prefix: str) -> dict[str, tuple[str, Any]]:
    """Key (under ``prefix``) -> (ETag, LastModified) of every object there."""
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return {
        obj["Key"][len(prefix) :]: (obj["ETag"], obj["LastModified"])
        for page in pages
        for obj in page.get("Contents", [])
    }


def _read(client: Any, key: str) -> bytes:
    return client.get_object(Bucket=BUCKET, Key=key)["Body"].read()


def test_s3_job_then_resume(
    ray_cluster: str,
    photo_dir: Path,
    s3_endpoint: str,
    service_settings: ServiceSettings,
    batch_settings: BatchSettings,
) -> None:
    client = _client(s3_endpoint)
    client.create_bucket(Bucket=BUCKET)
    for path in sorted(photo_dir.rglob("*")):
        if path.is_file():
            key = "photos/" + path.relative_to(photo_dir).as_posix()
            client.put_object(Bucket=BUCKET, Key=key, Body=path.read_bytes())
    settings = batch_settings.model_copy(update={"s3_endpoint_url": s3_endpoint, **KEYS})
    src, dst = f"s3://{BUCKET}/photos", f"s3://{BUCKET}/cutouts/"
    options = {"format": "webp", "bg_color": "lightgray"}

    first = run_batch(src, dst, options, settings, service_settings)

    assert (first.listed, first.ignored, first.succeeded, first.failed) == (4, 1, 3, 1)
    outputs = _objects(client, "cutouts/")
    expected = {name.rsplit(".", 1)[0] + ".webp" for name in photo_names() if name != CORRUPT_NAME}
    assert expected <= set(outputs)
    # parts are merged into the manifest (pyarrow leaves an empty folder marker behind)
    assert not [k for k in outputs if k.startswith(PARTS_DIR) and not k.endswith("/")]
    lines = _read(client, f"cutouts/{MANIFEST}").decode().splitlines()
    records = {r.input: r for r in map(Record.model_validate_json, lines)}
    assert sorted(records) == sorted(photo_names())
    assert records[CORRUPT_NAME].error_code == "unsupported_image"
    for name, record in records.items():
        if name != CORRUPT_NAME:
            assert (record.status, record.model, record.run_id) == ("ok", "u2net", first.run_id)
            body = _read(client, f"cutouts/{record.output}")
            assert body[:4] == b"RIFF" and body[8:12] == b"WEBP"
            assert len(body) == record.output_bytes
            head = client.head_object(Bucket=BUCKET, Key=f"cutouts/{record.output}")
            assert head["ContentType"] == "image/webp"
    assert json.loads(_read(client, f"cutouts/{SUMMARY}"))["run_id"] == first.run_id
    images = {key: outputs[key] for key in expected}

    second = run_batch(src, dst, options, settings, service_settings)

    assert (second.processed, second.skipped_done, second.skipped_failed) == (0, 3, 1)
    summary = json.loads(_read(client, f"cutouts/{SUMMARY}"))
    assert (summary["run_id"], summary["processed"]) == (second.run_id, 0)
    after = _objects(client, "cutouts/")
    assert {key: after[key] for key in expected} == images, "no output was written again"
    lines = _read(client, f"cutouts/{MANIFEST}").decode().splitlines()
    assert {Record.model_validate_json(line).run_id for line in lines} == {first.run_id}
