"""The stages of a batch job, as Ray Data runs them: decode in tasks, masks in actor pools,
compose + encode + write in tasks.

What travels between stages (Ray's object store, Arrow blocks) is kept small: the decode
task sends each model the photo already at that model's input size (320x320x3 = 300 KB for
U2-Net, 3 MB for RMBG-2.0 at 1024) plus the file's own bytes, not the decoded photo (18 MB
for 6 MP, up to 150 MB at the service's pixel limit). The finish task decodes the file again
(`imaging.pipeline.decode_for`, deterministic) and enlarges the model-size mask, exactly as
the service's ingress does around its model replicas (`deployments.routing`). Measured in
`benchmarks/bench_batch.py`: a second decode costs less CPU than carrying the pixels through
two more stages, and keeps the object store and the network light on a cluster.

Each model stage masks the rows still waiting for a mask: RMBG-2.0 first (when it is the
primary model), then U2-Net for what RMBG-2.0 could not do; the reason travels with the row
and ends in the manifest, as the service's X-Fallback-Reason. One input's failure is its
row's status, never an exception out of a stage, so a bad file cannot stop the job.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from bgremove.manifest import Record
from bgremove.storage import Location
from imaging.errors import ImageError
from imaging.limits import Limits
from imaging.options import RenderOptions
from imaging.pipeline import MaskOutcome, decode_for, finish
from imaging.resize import ModelInputSpec
from models.cuda_oom import translate_cuda_oom
from models.errors import ModelError
from models.registry import get_tier, load_predictor

log = logging.getLogger(__name__)

PENDING = "pending"
FAILED = "failed"


def input_column(tier: str) -> str:
    """The column holding the photo at ``tier``'s input size (``in_rmbg_2_0``, ``in_u2net``)."""
    return "in_" + "".join(c if c.isalnum() else "_" for c in tier)


@dataclass(frozen=True)
class StageContext:
    """What the decode and finish tasks need, pickled once into the job's tasks."""

    src: Location
    dst: Location
    options: RenderOptions
    limits: Limits
    background: bytes | None
    #: model tier -> its input, in the order the tiers are tried
    specs: dict[str, ModelInputSpec]
    fingerprint: str
    run_id: str

    def schema(self) -> pa.Schema:
        """The rows between the decode task and the finish task."""
        return pa.schema(
            [
                ("input", pa.string()),
                ("output", pa.string()),
                ("input_bytes", pa.int64()),
                ("input_mtime", pa.float64()),
                ("status", pa.string()),
                ("error_code", pa.string()),
                ("error", pa.string()),
                ("input_format", pa.string()),
                ("width", pa.int64()),
                ("height", pa.int64()),
                ("data", pa.large_binary()),
                *[(input_column(tier), pa.binary()) for tier in self.specs],
                ("mask", pa.binary()),
                ("mask_model", pa.string()),
                ("fallback_reason", pa.string()),
                ("t_read", pa.float64()),
                ("t_decode", pa.float64()),
                ("t_to_input", pa.float64()),
                ("t_mask", pa.float64()),
            ]
        )


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000


def decode_batch(batch: pa.Table, ctx: StageContext) -> pa.Table:
    """Read and decode each input under the service's limits; make each model's input."""
    rows = [_decode_row(row, ctx) for row in batch.to_pylist()]
    return pa.Table.from_pylist(rows, schema=ctx.schema())


def _decode_row(item: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
    row: dict[str, Any] = {**item, "status": PENDING, "data": b""}
    for tier in ctx.specs:
        row[input_column(tier)] = b""
    start = time.perf_counter()
    try:
        data = ctx.src.read(item["input"])
    except OSError as exc:
        return {**row, "status": FAILED, "error_code": "read_error", "error": str(exc)}
    row["t_read"] = _ms(start)
    start = time.perf_counter()
    try:
        decoded = decode_for(data, ctx.options, limits=ctx.limits, background=ctx.background)
    except ImageError as exc:
        return {**row, "status": FAILED, "error_code": exc.code, "error": exc.message}
    photo = decoded.photo
    row.update(
        data=data,
        input_format=photo.format,
        width=photo.width,
        height=photo.height,
        t_decode=_ms(start),
    )
    start = time.perf_counter()
    for tier, spec in ctx.specs.items():
        row[input_column(tier)] = np.ascontiguousarray(spec.to_input(photo.rgb)).tobytes()
    row["t_to_input"] = _ms(start)
    return row


def failure_reason(exc: BaseException) -> str:
    """A short code, as the service's X-Fallback-Reason: ``error:<code>`` of a model error
    (``error:out_of_memory`` for a CUDA OOM, once `translate_cuda_oom` has typed it), else
    ``error:<exception type>``."""
    if isinstance(exc, ModelError):
        return f"error:{exc.code}"
    return f"error:{type(exc).__name__}"


def load_reason(exc: BaseException) -> str:
    """``load_failed:<code>`` as the service reports a model group that did not load."""
    code = exc.code if isinstance(exc, ModelError) else "model_error"
    return f"load_failed:{code}"


class MaskStage:
    """One model tier in an actor pool: loaded once per actor, masks batches of rows.

    Rows that failed earlier or already have a mask pass through. When this tier cannot mask
    a row (it did not load, or the batch and then the image alone failed), the row goes on
    with the reason, for the next tier; the last tier marks it failed instead.
    """

    def __init__(self, tier: str, config: Any, spec: ModelInputSpec, last: bool) -> None:
        self._tier = tier
        self._spec = spec
        self._last = last
        self._predictor: Any = None
        self._load_error: str | None = None
        try:
            self._predictor = load_predictor(tier, config)
        except Exception as exc:
            if last:  # nothing after this tier: the job cannot make masks at all
                raise
            self._load_error = load_reason(exc)
            log.error("%s did not load (%s): %s; its rows fall back", tier, self._load_error, exc)

    def __call__(self, batch: pa.Table) -> pa.Table:
        status = batch.column("status").to_pylist()
        models = batch.column("mask_model").to_pylist()
        todo = [
            i for i, (s, m) in enumerate(zip(status, models, strict=True)) if s == PENDING and not m
        ]
        column = input_column(self._tier)
        if not todo:
            return batch.drop_columns([column])
        masks = batch.column("mask").to_pylist()
        reasons = batch.column("fallback_reason").to_pylist()
        errors = batch.column("error").to_pylist()
        codes = batch.column("error_code").to_pylist()
        timings = batch.column("t_mask").to_pylist()
        inputs = batch.column(column).to_pylist()
        h, w = self._spec.height, self._spec.width
        images = [np.frombuffer(inputs[i], np.uint8).reshape(h, w, 3) for i in todo]
        start = time.perf_counter()
        results = self._predict(images)
        share = _ms(start) / len(todo)
        for i, (mask, reason) in zip(todo, results, strict=True):
            timings[i] = share
            if mask is not None:
                masks[i], models[i] = mask.tobytes(), self._tier
            elif not self._last:
                reasons[i] = reasons[i] or reason
            else:
                earlier = f" (after {reasons[i]})" if reasons[i] else ""
                status[i], codes[i] = FAILED, "mask_failed"
                errors[i] = f"{self._tier} could not mask the image: {reason}{earlier}"
        for name, values in (
            ("status", status),
            ("mask", masks),
            ("mask_model", models),
            ("fallback_reason", reasons),
            ("error", errors),
            ("error_code", codes),
            ("t_mask", timings),
        ):
            index = batch.schema.get_field_index(name)
            batch = batch.set_column(
                index, batch.schema.field(index), pa.array(values, batch.schema.field(index).type)
            )
        return batch.drop_columns([column])

    def _predict(self, images: Sequence[np.ndarray]) -> list[tuple[np.ndarray | None, str]]:
        """(mask, "") per image, or (None, reason): a failed batch is retried image by
        image, so one bad image does not take the others down with it."""
        if self._predictor is None:
            return [(None, self._load_error or "load_failed:model_error")] * len(images)
        try:
            return [(self._checked(m), "") for m in self._predictor.predict(list(images))]
        except Exception as exc:
            # a CUDA OOM frees the GPU's cache: image by image may fit where the batch did not
            error = translate_cuda_oom(
                exc, f"CUDA out of memory in {self._tier}: lower its batch size"
            )
            if len(images) == 1:
                log.warning("%s failed on an image: %r", self._tier, exc)
                return [(None, failure_reason(error))]
        return [self._predict([image])[0] for image in images]

    def _checked(self, mask: np.ndarray) -> np.ndarray:
        shape = (self._spec.height, self._spec.width)
        if mask.shape != shape or mask.dtype != np.uint8:
            raise ValueError(f"{self._tier} returned a {mask.dtype} {mask.shape} mask for {shape}")
        return np.ascontiguousarray(mask)


def finish_batch(batch: pa.Table, ctx: StageContext) -> pa.Table:
    """Compose, encode and write each masked row; one manifest record per row."""
    records = [_finish_row(row, ctx).line() for row in batch.to_pylist()]
    return pa.table({"record": pa.array(records, pa.string())})


def _finish_row(row: dict[str, Any], ctx: StageContext) -> Record:
    timings = {
        name: row[f"t_{name}"]
        for name in ("read", "decode", "to_input", "mask")
        if row.get(f"t_{name}") is not None
    }
    width, height = row.get("width"), row.get("height")
    base: dict[str, Any] = {
        "input": row["input"],
        "output": row["output"],
        "input_bytes": row["input_bytes"],
        "input_mtime": row["input_mtime"],
        "input_format": row.get("input_format"),
        "input_size": (width, height) if width and height else None,
        "fallback_reason": row.get("fallback_reason"),
        "options": ctx.fingerprint,
        "run_id": ctx.run_id,
        "timings_ms": timings,
    }
    if row["status"] != PENDING:
        return _failed(base, row["error_code"] or "failed", row["error"] or "")
    step = "decode"
    try:
        start = time.perf_counter()
        decoded = decode_for(row["data"], ctx.options, limits=ctx.limits, background=ctx.background)
        timings["redecode"] = _ms(start)
        step = "mask"
        start = time.perf_counter()
        spec = ctx.specs[row["mask_model"]]
        small = np.frombuffer(row["mask"], np.uint8).reshape(spec.height, spec.width)
        mask = spec.to_size(small, decoded.photo.height, decoded.photo.width)
        timings["to_size"] = _ms(start)
        step = "render"
        outcome = MaskOutcome(mask, row["mask_model"], row.get("fallback_reason"))
        result = finish(decoded, outcome, ctx.options, timings)
        step = "write"
        start = time.perf_counter()
        ctx.dst.write(row["output"], result.body, result.media_type)
        timings["write"] = _ms(start)
    except ImageError as exc:
        return _failed(base, exc.code, exc.message)
    except OSError as exc:
        return _failed(base, f"{step}_error", str(exc))
    except Exception as exc:  # one input's bug must not stop the job: it is recorded
        log.exception("%s failed at %s", row["input"], step)
        return _failed(base, f"{step}_error", f"{type(exc).__name__}: {exc}")
    return Record(
        **base,
        status="ok",
        model=result.model,
        output_size=result.output_size,
        output_bytes=len(result.body),
        finished_at=time.time(),
    )


def _failed(base: dict[str, Any], code: str, message: str) -> Record:
    return Record(**base, status="failed", error_code=code, error=message, finished_at=time.time())


def resolve_tier(name: str, config: Any) -> tuple[ModelInputSpec, Any]:
    """Load a tier once (on a worker, as a task) to learn its input and to pin what its load
    chose (`ModelTier.pin`: U2-Net's runtime, precision, threads, resizing): every actor then
    loads that, without timing candidates again, and every row's input matches every
    actor's model."""
    tier = get_tier(name)
    assert tier.pin is not None, f"{name}'s input is known from its config"
    predictor = load_predictor(name, config)
    return tier.input_size(config, predictor), tier.pin(config, predictor)
