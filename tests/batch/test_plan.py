"""The job's bookkeeping without Ray: names, the resume rule, the manifest, locations, flags."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from bgremove import batch, batch_command
from bgremove.batch import BatchSummary, Plan, output_name, plan_work
from bgremove.batch_resources import fit_memory, model_stages
from bgremove.batch_settings import BatchSettings
from bgremove.errors import UsageError
from bgremove.flags import option_fields
from bgremove.manifest import MANIFEST, PARTS_DIR, Manifest, Record, options_fingerprint
from bgremove.storage import FileEntry, S3Config, open_location
from imaging.memory import RENDER_BASE_MEMORY, RENDER_BYTES_PER_PIXEL, render_memory
from imaging.options import RenderOptions
from imaging.pipeline import Limits
from imaging.presets import load_presets, preset_fields
from models.registry import RMBG
from models.settings import RemovalSettings

REPO = Path(__file__).resolve().parents[2]
FP = "f" * 16


def _record(name: str, **fields: object) -> Record:
    values: dict[str, object] = {
        "input": name,
        "output": output_name(name, ".png"),
        "status": "ok",
        "input_bytes": 100,
        "input_mtime": 1.0,
        "output_bytes": 50,
        "options": FP,
        "run_id": "r1",
        "finished_at": 2.0,
    }
    return Record.model_validate({**values, **fields})


def _plan(
    sources: list[FileEntry], outputs: list[FileEntry], latest: dict[str, Record], **kw: Any
) -> tuple[Plan, BatchSummary]:
    summary = BatchSummary(run_id="r2", src="s", dst="d")
    args = {"suffix": ".png", "fingerprint": FP, "retry_failed": False, "run_id": "r2", **kw}
    return plan_work(sources, outputs, latest, summary=summary, **args), summary


def test_output_names_keep_the_relative_path() -> None:
    assert output_name("a/b.jpg", ".png") == "a/b.png"
    assert output_name("a.b/c.tiff", ".webp") == "a.b/c.webp"
    assert output_name("a/noext", ".jpg") == "a/noext.jpg"


def test_resume_rule() -> None:
    src = [FileEntry(n, 100, 1.0) for n in ("done.jpg", "gone.jpg", "bad.jpg", "new.jpg")]
    src += [FileEntry("changed.jpg", 101, 1.0), FileEntry("readme.txt", 5, 1.0)]
    outputs = [FileEntry("done.png", 50, 3.0), FileEntry("changed.png", 50, 3.0)]
    latest = {
        "done.jpg": _record("done.jpg"),
        "gone.jpg": _record("gone.jpg"),  # its output was deleted since
        "changed.jpg": _record("changed.jpg"),  # the input is another file now
        "bad.jpg": _record("bad.jpg", status="failed", error_code="unsupported_image"),
    }
    plan, summary = _plan(src, outputs, latest)
    assert sorted(t["input"] for t in plan.todo) == ["changed.jpg", "gone.jpg", "new.jpg"]
    assert (summary.listed, summary.ignored) == (5, 1)
    assert (summary.skipped_done, summary.skipped_failed) == (1, 1)
    # other options: everything is done again; --retry-failed: the bad one too
    plan, _ = _plan(src, outputs, latest, fingerprint="0" * 16)
    assert len(plan.todo) == 5
    plan, _ = _plan(src, outputs, latest, retry_failed=True)
    assert "bad.jpg" in [t["input"] for t in plan.todo]
    # a transient failure (the read, the model) is always retried
    latest["bad.jpg"] = _record("bad.jpg", status="failed", error_code="read_error")
    plan, _ = _plan(src, outputs, latest)
    assert "bad.jpg" in [t["input"] for t in plan.todo]


def test_two_inputs_one_output_name_fail_the_second() -> None:
    plan, _ = _plan([FileEntry("a.png", 1, 1.0), FileEntry("a.jpg", 1, 1.0)], [], {})
    assert [t["input"] for t in plan.todo] == ["a.jpg"]
    (refused,) = plan.refused
    assert (refused.input, refused.error_code) == ("a.png", "collision")


def test_fingerprint_follows_options_limits_and_background() -> None:
    presets = preset_fields(load_presets())
    white = RenderOptions.parse({"preset": "marketplace-white"}, presets=presets)
    same = RenderOptions.parse({"preset": "marketplace-white", "format": "jpeg"}, presets=presets)
    fingerprints = {
        options_fingerprint(white, Limits()),
        options_fingerprint(RenderOptions.parse({}), Limits()),
        options_fingerprint(white, Limits(max_pixels=10)),
        options_fingerprint(white, Limits(), b"backdrop"),
    }
    assert len(fingerprints) == 4
    assert options_fingerprint(same, Limits()) == options_fingerprint(white, Limits())


def test_parts_of_an_interrupted_run_are_read_and_merged(tmp_path: Path) -> None:
    dst = open_location(str(tmp_path / "dst"))
    crashed = Manifest(dst, "r1", flush_s=3600)
    crashed.add([_record("a.jpg"), _record("b.jpg")])
    crashed.flush()  # ... and the run dies before `close`
    assert not (tmp_path / "dst" / MANIFEST).exists()

    resumed = Manifest(dst, "r2", flush_s=3600)
    latest = resumed.load(list(dst.list_files()))
    assert sorted(latest) == ["a.jpg", "b.jpg"]
    resumed.add([_record("b.jpg", run_id="r2"), _record("c.jpg", run_id="r2")])
    resumed.close()
    lines = (tmp_path / "dst" / MANIFEST).read_text().splitlines()
    merged = [Record.model_validate_json(line) for line in lines]
    assert [(r.input, r.run_id) for r in merged] == [
        ("a.jpg", "r1"),
        ("b.jpg", "r2"),
        ("c.jpg", "r2"),
    ]
    assert not list((tmp_path / "dst" / PARTS_DIR).iterdir())


def test_locations(tmp_path: Path) -> None:
    local = open_location(str(tmp_path / "x"))
    assert not local.is_s3 and local.root == (tmp_path / "x").as_posix()
    with pytest.raises(UsageError):
        open_location("gs://bucket/prefix")
    with pytest.raises(UsageError):
        open_location("s3://")
    with pytest.raises(UsageError):
        S3Config(endpoint_url="minio:9000").filesystem()
    with pytest.raises(UsageError):
        S3Config(access_key_id="only-the-id").filesystem()  # type: ignore[arg-type]
    s3 = open_location("s3://bucket/a/b/", S3Config(endpoint_url="http://127.0.0.1:9"))
    assert s3.is_s3 and s3.root == "bucket/a/b" and s3.path("c.png") == "bucket/a/b/c.png"
    assert not local.exists()
    (tmp_path / "x").mkdir()
    assert local.exists()
    with pytest.raises(UsageError, match="does not exist"):
        batch.run_batch(str(tmp_path / "missing"), str(tmp_path / "out"))
    inner = open_location(str(tmp_path / "x" / "out"))
    assert inner.relative_to(local) == "out" and local.relative_to(inner) is None
    # DST inside SRC: its files (and hidden ones) are never taken for inputs
    for rel in ("a.jpg", "out/a.png", "sub/.hidden.jpg", ".cache/b.jpg", "outer/c.jpg"):
        (tmp_path / "x" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "x" / rel).write_bytes(b"x")
    found = sorted(e.rel for e in local.list_files(exclude=inner.relative_to(local)))
    assert found == ["a.jpg", "outer/c.jpg"]


def test_s3_settings_from_aws_variables_flags_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://minio:9000")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "from-env")
    monkeypatch.setenv("BG_REMOVAL_BATCH_U2NET_ACTORS", "3")
    settings = BatchSettings()
    assert settings.s3_endpoint_url == "http://minio:9000" and settings.u2net_actors == 3
    assert settings.s3_access_key_id is not None
    assert settings.s3_access_key_id.get_secret_value() == "from-env"
    args = _parse(
        ["batch", "a", "b", "--s3-endpoint-url", "http://other:9000", "--u2net-actors", "2"]
    )
    flagged = batch_command.settings_from_args(args)
    assert flagged.s3_endpoint_url == "http://other:9000" and flagged.u2net_actors == 2
    with pytest.raises(UsageError):
        batch_command.settings_from_args(_parse(["batch", "a", "b", "--u2net-actors", "0"]))


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bgremove")
    batch_command.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_the_rayjob_entrypoint_parses() -> None:
    """configs/kuberay/rayjob.yaml runs exactly this command line."""
    job = yaml.safe_load((REPO / "configs" / "kuberay" / "rayjob.yaml").read_text())
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[0] == "bgremove"
    args = _parse(argv[1:])
    assert (args.src, args.dst) == ("s3://my-bucket/photos", "s3://my-bucket/cutouts")
    fields = option_fields(args)
    assert fields == {"preset": "marketplace-white"}
    RenderOptions.parse(fields, presets=preset_fields(load_presets()))
    assert args.func is batch_command.run
    # every API option has its flag, under the API's name
    args = _parse(["batch", "a", "b", "--style", "minimal", "--bg-color", "ffffff", "--crop"])
    assert option_fields(args) == {"style": "minimal", "bg_color": "ffffff", "crop": "true"}


def test_finish_tasks_reserve_what_the_service_ingress_does() -> None:
    """One rule (`imaging.memory`) for both: a finish task reserves what an ingress replica
    reserves for a pixel budget of one largest request."""
    from deployments.app import ingress_memory_bytes
    from deployments.settings import ServiceSettings

    limits = Limits(max_pixels=10_000_000, max_output_pixels=20_000_000)
    ingress = ServiceSettings.model_construct(ingress_pixel_budget=30_000_000)
    assert BatchSettings().finish_memory(limits) == ingress_memory_bytes(ingress)
    assert BatchSettings().finish_memory(limits) == RENDER_BASE_MEMORY + 20 * 30_000_000
    assert render_memory(30_000_000) == RENDER_BASE_MEMORY + RENDER_BYTES_PER_PIXEL * 30_000_000
    assert BatchSettings(finish_memory_mb=100).finish_memory(limits) == 100 * 1024**2
    assert BatchSettings().decode_memory(limits) == batch.DECODE_BASE_MEMORY + 30_000_000


def test_a_reservation_no_node_can_hold_is_capped() -> None:
    gib = 1024**3
    assert fit_memory(2 * gib, [16 * gib, 4 * gib], "finish") == 2 * gib
    assert fit_memory(3 * gib, [4 * gib], "finish") == 2 * gib


def _service(**values: Any) -> RemovalSettings:
    return RemovalSettings(rmbg_path="/weights/rmbg", rmbg_resolution=512, **values)


def test_gpu_stages_come_from_the_registry_and_the_cluster() -> None:
    """RMBG-2.0's stage (a GPU tier: its input is known from its config, no Ray needed): one
    actor per GPU share, the device the settings name; auto picks it where GPUs are."""
    cluster = {"CPU": 8.0, "GPU": 2.0}
    (stage,) = model_stages(
        BatchSettings(rmbg_num_gpus=0.5), _service(fallback=False, device="cuda"), cluster
    )
    assert (stage.tier, stage.num_gpus, stage.max_actors, stage.batch_size) == (RMBG, 0.5, 4, 8)
    assert stage.config.device == "cuda" and stage.config.source == "/weights/rmbg"
    assert (stage.spec.width, stage.spec.height) == (512, 512)
    assert stage.config.threads == 1  # one CPU per actor (rmbg_num_cpus)
    (auto,) = model_stages(BatchSettings(), _service(fallback=False), cluster)
    assert auto.tier == RMBG and auto.num_gpus == 1.0 and auto.max_actors == 2
    (on_cpus,) = model_stages(
        BatchSettings(model=RMBG, rmbg_num_cpus=4), _service(fallback=False), {"CPU": 8.0}
    )
    assert (on_cpus.num_gpus, on_cpus.max_actors, on_cpus.config.device) == (0.0, 1, "cpu")
    assert on_cpus.config.threads == 4


@pytest.mark.parametrize(
    ("batch_values", "service_values", "says"),
    [
        ({"rmbg_num_gpus": 1.0}, {}, "set --rmbg-gpus 0 to run it on CPUs, or --model u2net"),
        ({"rmbg_num_gpus": 0.0}, {"device": "cuda"}, "RMBG-2.0's actors get no GPU"),
    ],
)
def test_a_gpu_share_the_cluster_cannot_give_is_a_usage_error(
    batch_values: dict[str, Any], service_values: dict[str, Any], says: str
) -> None:
    settings = BatchSettings(model=RMBG, **batch_values)
    with pytest.raises(UsageError, match=says) as caught:
        model_stages(settings, _service(**service_values), {"CPU": 4.0})
    assert caught.value.code == "resources"
