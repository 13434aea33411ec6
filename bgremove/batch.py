"""``bgremove batch SRC DST``: a catalogue job on Ray Data, over folders and S3 prefixes.

The same decoding, limits, models, fallback and output options as the service, run as a
streaming Ray Data pipeline (`bgremove.batch_stages`): decode in tasks, masks in actor pools
(RMBG-2.0 on GPUs when the cluster has them, U2-Net on CPUs, U2-Net again for any image
RMBG-2.0 could not do), compose + encode + write in tasks. SRC and DST are local folders or
``s3://bucket/prefix`` (`bgremove.storage`); DST gets the outputs under the inputs' relative
paths, a manifest and a summary (`bgremove.manifest`), so a second run only does what the
first did not.

Where it runs: ``ray.init()`` connects to RAY_ADDRESS when set (``ray job submit``, KubeRay's
RayJob), else to a cluster started on this machine, else starts one here; nothing else
changes. Resources per stage are `BatchSettings` (BG_REMOVAL_BATCH_* variables, or flags);
the models and limits are the service's own settings (BG_REMOVAL_* variables).
"""

from __future__ import annotations

import json
import logging
import math
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from bgremove.errors import UsageError
from bgremove.flags import SUFFIXES
from imaging.errors import InvalidOptionError
from imaging.formats import IMAGE_SUFFIXES
from imaging.memory import DECODE_BASE_MEMORY as DECODE_BASE_MEMORY  # BatchSettings' rule
from imaging.options import RenderOptions
from imaging.presets import load_presets, preset_fields

if TYPE_CHECKING:  # settings (pydantic), storage (pyarrow) and manifest load when a job runs,
    # not with the plan and summary helpers
    from bgremove.batch_settings import BatchSettings
    from bgremove.manifest import Manifest, Record
    from bgremove.storage import FileEntry
    from imaging.limits import Limits
    from models.settings import RemovalSettings

log = logging.getLogger(__name__)


#: order of the per-image steps in reports
STEPS = (
    "read",
    "decode",
    "to_input",
    "mask",
    "redecode",
    "to_size",
    "compose",
    "encode",
    "write",
)
#: rows of the input list per block: enough blocks to spread, few enough to track cheaply
MAX_BLOCKS = 5000


@dataclass
class BatchSummary:
    """What one run did: counts, time, per-step costs; `summary.json` in DST."""

    run_id: str
    src: str
    dst: str
    #: images found in SRC
    listed: int = 0
    #: files in SRC without an image extension
    ignored: int = 0
    #: images whose output is in DST from an earlier run
    skipped_done: int = 0
    #: images that failed before for a reason of their own (see --retry-failed)
    skipped_failed: int = 0
    #: images this run worked on (succeeded + failed)
    processed: int = 0
    succeeded: int = 0
    failed: int = 0
    fallbacks: int = 0
    models: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    #: (input, code, message) of the first failures
    failures: list[tuple[str, str, str]] = field(default_factory=list)
    #: per-step milliseconds summed over this run's successful images
    step_ms: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0
    interrupted: bool = False
    #: model tier -> Ray resources of its actors, as planned
    stages: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def images_per_s(self) -> float:
        return self.succeeded / self.wall_s if self.wall_s > 0 else 0.0

    def add(self, record: Record) -> None:
        self.processed += 1
        if record.status == "ok":
            self.succeeded += 1
            if record.model:
                self.models[record.model] = self.models.get(record.model, 0) + 1
            self.fallbacks += record.fallback_reason is not None
            for step, ms in record.timings_ms.items():
                self.step_ms[step] = self.step_ms.get(step, 0.0) + ms
        else:
            self.failed += 1
            code = record.error_code or "failed"
            self.errors[code] = self.errors.get(code, 0) + 1
            if len(self.failures) < 50:
                self.failures.append((record.input, code, record.error or ""))

    def exit_status(self) -> int:
        """0: all done, 1: some input failed (the others were processed), 130: interrupted."""
        if self.interrupted:
            return 130
        return 1 if self.failed else 0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "images_per_s": self.images_per_s}

    def report(self, out: TextIO) -> None:
        """A few lines for a person at the end of the run."""
        rate = f", {self.images_per_s:.2f} images/s" if self.succeeded else ""
        lines = [
            f"batch {self.run_id}: {self.listed} image(s) in {self.src}: processed "
            f"{self.processed} ({self.succeeded} ok, {self.failed} failed), skipped "
            f"{self.skipped_done} done before and {self.skipped_failed} failed before; "
            f"{self.wall_s:.1f} s{rate}" + (" - interrupted" if self.interrupted else "")
        ]
        if self.models:
            models = ", ".join(f"{m} {n}" for m, n in sorted(self.models.items()))
            lines.append(f"models: {models} ({self.fallbacks} by fallback)")
        if self.succeeded:
            steps = ", ".join(
                f"{s} {self.step_ms[s] / self.succeeded:.0f}" for s in STEPS if s in self.step_ms
            )
            lines.append(f"per image, mean ms: {steps}")
        if self.ignored:
            lines.append(f"ignored: {self.ignored} file(s) without an image extension")
        for name, code, message in self.failures[:20]:
            lines.append(f"  failed: {name}: [{code}] {message}")
        from bgremove.manifest import MANIFEST

        lines.append(f"manifest: {self.dst.rstrip('/')}/{MANIFEST}")
        out.write("\n".join(lines) + "\n")
        out.flush()


def new_run_id() -> str:
    """Sortable by start time, unique across concurrent runs."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


def output_name(rel: str, suffix: str) -> str:
    """``a/b.jpg`` -> ``a/b.png``: the input's relative path, the output format's extension."""
    stem = rel.rsplit(".", 1)[0] if "." in rel.rsplit("/", 1)[-1] else rel
    return stem + suffix


@dataclass
class Plan:
    """The inputs to process, and records for those failed without any work (collisions)."""

    todo: list[dict[str, Any]] = field(default_factory=list)
    refused: list[Record] = field(default_factory=list)


def plan_work(
    sources: list[FileEntry],
    dst_files: list[FileEntry],
    latest: Mapping[str, Record],
    *,
    suffix: str,
    fingerprint: str,
    retry_failed: bool,
    run_id: str,
    summary: BatchSummary,
) -> Plan:
    """Which inputs this run does: not done before, not known bad, output names unique."""
    from bgremove.manifest import Record, is_done, is_known_bad

    outputs = {e.rel: e.size for e in dst_files}
    plan = Plan()
    claimed: dict[str, str] = {}
    for source in sorted(sources, key=lambda e: e.rel):
        if Path(source.rel).suffix.lower() not in IMAGE_SUFFIXES:
            summary.ignored += 1
            continue
        summary.listed += 1
        record = latest.get(source.rel)
        if is_done(record, source, fingerprint, outputs):
            summary.skipped_done += 1
            continue
        if not retry_failed and is_known_bad(record, source, fingerprint):
            summary.skipped_failed += 1
            continue
        target = output_name(source.rel, suffix)
        owner = claimed.setdefault(target, source.rel)
        if owner != source.rel:  # a.jpg and a.png would both write a.png
            plan.refused.append(
                Record(
                    input=source.rel,
                    output=None,
                    status="failed",
                    error_code="collision",
                    error=f"its output {target} is {owner}'s; rename one of them",
                    input_bytes=source.size,
                    input_mtime=source.mtime,
                    options=fingerprint,
                    run_id=run_id,
                    finished_at=time.time(),
                )
            )
            continue
        plan.todo.append(
            {
                "input": source.rel,
                "output": target,
                "input_bytes": source.size,
                "input_mtime": source.mtime,
            }
        )
    return plan


@contextmanager
def ray_session(address: str | None) -> Iterator[None]:
    """Use the Ray this process is connected to, else ``ray.init(address)`` (None: Ray's
    rule: RAY_ADDRESS, a cluster started on this machine, else a new local one), shut down
    after if this call started it."""
    import ray

    if ray.is_initialized():
        yield
        return
    ray.init(address=address)
    try:
        yield
    finally:
        ray.shutdown()


def _execute(
    plan: Plan,
    ctx_args: dict[str, Any],
    settings: BatchSettings,
    service: RemovalSettings,
    manifest: Manifest,
    summary: BatchSummary,
) -> None:
    """Build the Ray Data pipeline and stream its records into the manifest."""
    import ray
    import ray.data

    from bgremove.batch_resources import fit_memory, model_stages
    from bgremove.batch_stages import (
        MaskStage,
        StageContext,
        decode_batch,
        finish_batch,
    )
    from bgremove.manifest import Record

    stages = model_stages(settings, service, ray.cluster_resources())
    nodes = [n["Resources"].get("memory", 0.0) for n in ray.nodes() if n.get("Alive")]
    limits: Limits = ctx_args["limits"]
    decode_memory = fit_memory(settings.decode_memory(limits), nodes, "decode")
    finish_memory = fit_memory(settings.finish_memory(limits), nodes, "finish")
    summary.stages = {
        s.tier: {"num_cpus": s.num_cpus, "num_gpus": s.num_gpus, "max_actors": s.max_actors}
        for s in stages
    }
    ctx = StageContext(specs={s.tier: s.spec for s in stages}, **ctx_args)
    blocks = min(MAX_BLOCKS, max(1, math.ceil(len(plan.todo) / settings.io_batch_size)))
    ds = ray.data.from_items(plan.todo, override_num_blocks=blocks)
    ds = ds.map_batches(
        decode_batch,
        batch_format="pyarrow",
        batch_size=settings.io_batch_size,
        num_cpus=settings.decode_num_cpus,
        # a reservation of its own also keeps Ray Data from fusing the decode into the
        # model actors (it fuses stages whose resources match): decoding there would run on
        # the actors' CPUs, one image at a time per actor, while a GPU waits
        memory=decode_memory,
        fn_kwargs={"ctx": ctx},
    )
    for i, stage in enumerate(stages):
        ds = ds.map_batches(
            MaskStage,
            batch_format="pyarrow",
            batch_size=stage.batch_size,
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=stage.max_actors),
            num_cpus=stage.num_cpus,
            num_gpus=stage.num_gpus,
            fn_constructor_kwargs={
                "tier": stage.tier,
                "config": stage.config,
                "spec": stage.spec,
                "last": i == len(stages) - 1,
            },
        )
    ds = ds.map_batches(
        finish_batch,
        batch_format="pyarrow",
        batch_size=settings.io_batch_size,
        num_cpus=settings.finish_num_cpus,
        memory=finish_memory,
        fn_kwargs={"ctx": ctx},
    )
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        records = [Record.model_validate_json(s) for s in batch.column("record").to_pylist()]
        manifest.add(records)
        for record in records:
            summary.add(record)


def run_batch(
    src: str,
    dst: str,
    options_fields: Mapping[str, str] | None = None,
    settings: BatchSettings | None = None,
    service: RemovalSettings | None = None,
    *,
    bg_image: str | Path | None = None,
    out: TextIO | None = None,
) -> BatchSummary:
    """Process every image under ``src`` not yet done into ``dst``; see the module's doc.

    ``options_fields``: the API's option fields as text (``{"preset": "marketplace-white"}``);
    ``settings``/``service``: default to the BG_REMOVAL_BATCH_* / BG_REMOVAL_* variables;
    ``out``: where the closing report goes (None: nowhere). Raises `UsageError` (bad
    arguments, options) or `SetupError` (storage, models) before any input is processed;
    a bad input is a failed record, never an exception.
    """
    from bgremove.batch_settings import BatchSettings
    from bgremove.manifest import STATE_DIR, SUMMARY, Manifest, options_fingerprint
    from bgremove.storage import open_location
    from models.settings import RemovalSettings

    started = time.perf_counter()
    settings = settings or BatchSettings.load()
    service = service or RemovalSettings.load()
    run_id = new_run_id()
    background = _read_background(bg_image)
    try:
        presets = preset_fields(load_presets(service.presets_file))
        options = RenderOptions.parse(
            dict(options_fields or {}), presets=presets, bg_image=background is not None
        )
    except InvalidOptionError as exc:
        raise UsageError(exc.message, code=exc.code) from None
    limits = service.limits()
    fingerprint = options_fingerprint(options, limits, background)
    s3 = settings.s3()
    source, target = open_location(src, s3), open_location(dst, s3)
    if source.relative_to(target) is not None or (
        type(source.fs) is type(target.fs) and source.root == target.root
    ):
        raise UsageError(f"SRC {src} must not be DST or lie inside it", code="location")
    if not source.exists():
        raise UsageError(f"SRC {src} does not exist (or holds nothing)", code="location")
    summary = BatchSummary(run_id=run_id, src=source.uri, dst=target.uri)
    dst_files = list(target.list_files())
    sources = list(source.list_files(exclude=target.relative_to(source)))
    manifest = Manifest(target, run_id, flush_s=settings.manifest_flush_s)
    latest = manifest.load(dst_files)
    plan = plan_work(
        sources,
        [e for e in dst_files if not e.rel.startswith(STATE_DIR + "/")],
        latest,
        suffix=SUFFIXES[options.fmt],
        fingerprint=fingerprint,
        retry_failed=settings.retry_failed,
        run_id=run_id,
        summary=summary,
    )
    ctx_args = {
        "src": source,
        "dst": target,
        "options": options,
        "limits": limits,
        "background": background,
        "fingerprint": fingerprint,
        "run_id": run_id,
    }
    try:
        manifest.add(plan.refused)
        for record in plan.refused:
            summary.add(record)
        if plan.todo:
            with ray_session(settings.ray_address):
                _execute(plan, ctx_args, settings, service, manifest, summary)
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        manifest.close()
        summary.wall_s = time.perf_counter() - started
        body = json.dumps(summary.as_dict(), indent=2).encode()
        target.write(SUMMARY, body, "application/json")
        target.write(f"{STATE_DIR}/runs/{run_id}.json", body, "application/json")
    if out is not None:
        summary.report(out)
    return summary


def _read_background(path: str | Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read --bg-image {path}: {exc}", code="bg_image") from None
