"""The batch job's record in DST: what became of each input, and what the next run may skip.

Files in DST (JSON, one object per line for the manifest):

- ``manifest.jsonl``: the latest record of every input ever processed into DST, sorted by
  input: output, model, fallback reason, error, sizes, per-step timings, the run that wrote it;
- ``summary.json``: the last run's counts and timings;
- ``_bgremove/parts/<run>-<n>.jsonl``: records flushed while a run goes on (S3 objects cannot
  be appended to), merged into the manifest and deleted when it ends. A run that dies leaves
  its parts: the next run reads them, so nothing it finished is done again.

Resume rule: an input is done when its latest record says ``ok`` for the same input file
(size and time stamp), the same options (`options_fingerprint`), and DST holds its output at
the recorded size. An input that failed for a reason of its own (not an image, too large)
with the same file and options is not retried unless asked: it would fail again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from bgremove.storage import FileEntry, Location
from imaging.limits import Limits
from imaging.options import RenderOptions

log = logging.getLogger(__name__)

MANIFEST = "manifest.jsonl"
SUMMARY = "summary.json"
#: our own files in DST (never taken for inputs or outputs)
STATE_DIR = "_bgremove"
PARTS_DIR = f"{STATE_DIR}/parts"

JSON_LINES = "application/x-ndjson"

#: error codes that the same input and options would meet again (`imaging.errors`, names)
PERMANENT_ERRORS = frozenset(
    {"unsupported_image", "image_too_large", "output_too_large", "invalid_option", "collision"}
)


class Record(BaseModel):
    """One input's outcome in one run: a line of the manifest."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    input: str
    output: str | None
    status: Literal["ok", "failed"]
    model: str | None = None
    fallback_reason: str | None = None
    error_code: str | None = None
    error: str | None = None
    input_bytes: int
    input_mtime: float | None = None
    input_format: str | None = None
    input_size: tuple[int, int] | None = None
    output_size: tuple[int, int] | None = None
    output_bytes: int | None = None
    timings_ms: dict[str, float] = {}
    options: str
    run_id: str
    finished_at: float

    def line(self) -> str:
        return json.dumps(self.model_dump(mode="json"), separators=(",", ":"))


def options_fingerprint(
    options: RenderOptions, limits: Limits, background: bytes | None = None
) -> str:
    """What decides an output's bytes besides the input and the model: a change redoes it."""

    def plain(value: Any) -> Any:
        return value.value if isinstance(value, Enum) else str(value)

    document = {
        "options": asdict(options),
        "limits": asdict(limits),
        "background": hashlib.sha256(background).hexdigest() if background else None,
    }
    text = json.dumps(document, sort_keys=True, default=plain)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def parse_lines(text: str, source: str) -> Iterable[Record]:
    """Records of a JSON-lines text; a broken line (a torn write) is logged and skipped."""
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield Record.model_validate_json(line)
        except ValidationError as exc:
            log.warning("%s:%d: ignored a malformed manifest line (%s)", source, number, exc)


class Manifest:
    """The records in DST: read once at the start, written by parts, merged at the end."""

    def __init__(self, dst: Location, run_id: str, *, flush_s: float = 30.0) -> None:
        self._dst = dst
        self._run_id = run_id
        self._flush_s = flush_s
        self._last_flush = time.monotonic()
        self._pending: list[Record] = []
        self._parts_seen: list[str] = []
        self._parts_written = 0
        #: input -> its latest record, this run's included
        self.latest: dict[str, Record] = {}

    def load(self, dst_files: Iterable[FileEntry]) -> dict[str, Record]:
        """The latest record of each input: the manifest, then the parts that earlier runs
        left (found in ``dst_files``, DST's listing), oldest first."""
        text = self._dst.read_optional(MANIFEST)
        if text is not None:
            for record in parse_lines(text.decode("utf-8"), self._dst.uri_of(MANIFEST)):
                self.latest[record.input] = record
        self._parts_seen = sorted(
            e.rel
            for e in dst_files
            if e.rel.startswith(PARTS_DIR + "/") and e.rel.endswith(".jsonl")
        )
        for rel in self._parts_seen:
            for record in parse_lines(self._dst.read(rel).decode("utf-8"), rel):
                self.latest[record.input] = record
        return dict(self.latest)

    def add(self, records: Iterable[Record]) -> None:
        """Keep records; they reach DST at the next flush (at most ``flush_s`` later)."""
        for record in records:
            self._pending.append(record)
            self.latest[record.input] = record
        if self._pending and time.monotonic() - self._last_flush >= self._flush_s:
            self.flush()

    def flush(self) -> None:
        """Write the kept records as one part file."""
        self._last_flush = time.monotonic()
        if not self._pending:
            return
        self._parts_written += 1
        rel = f"{PARTS_DIR}/{self._run_id}-{self._parts_written:05d}.jsonl"
        body = "".join(r.line() + "\n" for r in self._pending).encode()
        self._dst.write(rel, body, JSON_LINES)
        self._parts_seen.append(rel)
        self._pending.clear()

    def close(self) -> None:
        """Flush, then merge everything into the manifest and drop the parts; a run that
        wrote nothing leaves DST as it was."""
        self.flush()
        if not self._parts_seen:
            return
        body = "".join(self.latest[name].line() + "\n" for name in sorted(self.latest))
        self._dst.write(MANIFEST, body.encode(), JSON_LINES)
        for rel in self._parts_seen:
            self._dst.delete(rel)
        self._parts_seen.clear()


def is_done(
    record: Record | None,
    source: FileEntry,
    fingerprint: str,
    outputs: Mapping[str, int],
) -> bool:
    """Whether ``source`` needs no work: its last record is a success for this very file and
    these options, and its output is in DST at the size recorded."""
    return (
        record is not None
        and record.status == "ok"
        and _same_input(record, source, fingerprint)
        and record.output is not None
        and outputs.get(record.output) == record.output_bytes
    )


def is_known_bad(record: Record | None, source: FileEntry, fingerprint: str) -> bool:
    """Whether ``source`` failed before for a reason of its own that would recur."""
    return (
        record is not None
        and record.status == "failed"
        and record.error_code in PERMANENT_ERRORS
        and _same_input(record, source, fingerprint)
    )


def _same_input(record: Record, source: FileEntry, fingerprint: str) -> bool:
    same_time = (
        record.input_mtime is None
        or source.mtime is None
        or abs(record.input_mtime - source.mtime) < 1e-3
    )
    return record.options == fingerprint and record.input_bytes == source.size and same_time
