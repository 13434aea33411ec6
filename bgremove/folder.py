"""``bgremove p INPUT_DIR OUTPUT_DIR``: every image of a folder, resumable, in parallel.

- Which files: those with an image extension the decoder reads (others are counted as
  ignored, hidden files skipped), at the top level or, with ``-r``, below it; the output
  folder is never walked even when it lies inside the input folder.
- Where results go: the same relative path under OUTPUT_DIR, the extension of the result's
  format (``a/b.jpg`` -> ``a/b.png``); two inputs that would share an output fail (the second
  in name order) rather than overwrite each other.
- Resume: an output at least as new as its input is skipped (``--overwrite`` redoes it);
  outputs are written atomically, so an interrupted run leaves nothing half-written that the
  next would skip. Options are not remembered: after changing them, use ``--overwrite``.
- Parallel: a few worker threads each take one image through read, decode, mask, compose,
  encode and write. The model call is serialised (`bgremove.local`); everything else releases
  the GIL, so one image's decode/compose/encode overlaps another's model run.
- Bad files: recorded with their reason, the run goes on; the summary lists them and the exit
  status is 1. Errors that would fail every file (the model, the service) stop the run (2).
- ``--watch``: after the first pass the folder is scanned again every ``--watch-interval``
  seconds; a new or changed image is processed once its size and time stamp hold still
  across two scans (it may still be being copied). Polling rather than file-system events
  (rembg uses watchdog): no extra dependency, it works on network and bind-mounted folders
  where inotify events do not arrive, no event can be lost (the scan compares the folder with
  the outputs, the resume rule), and a scan of thousands of files costs milliseconds.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

from bgremove.errors import FileError, SetupError, UsageError
from bgremove.flags import (
    SUFFIXES,
    add_engine_flags,
    add_option_flags,
    positive_float,
    positive_int,
)
from bgremove.folder_scan import Scan, Stamp, Task, collision_reason, scan, up_to_date
from bgremove.output import write_atomic
from bgremove.remover import Outcome, Remover
from models.hardware import usable_cpus

#: worker threads against a service: requests mostly wait on the network
REMOTE_JOBS = 4
#: bounds of the in-process default: each job holds one image's arrays (~100 MB at 7 MP)
MIN_LOCAL_JOBS, MAX_LOCAL_JOBS = 2, 8
#: exit status after Ctrl-C (128 + SIGINT), as shells report it
INTERRUPTED = 130


def default_jobs(remote: bool) -> int:
    """Worker threads. In-process: one per CPU (at least 2, at most 8). The model runs one
    image at a time on every CPU; a second image's decode, compose and encode overlap it.
    Measured on 2 CPUs (u2net, OpenVINO, 2 threads): 2 jobs gave 1.12x (own-size photos)
    and 1.15x (3000 px) the images/s of 1 job, 3 jobs no more than 2. Against a service:
    a few requests in flight."""
    if remote:
        return REMOTE_JOBS
    return max(MIN_LOCAL_JOBS, min(usable_cpus(), MAX_LOCAL_JOBS))


@dataclass
class Summary:
    """What a run did, for the closing report and the exit status."""

    done: int = 0
    skipped: int = 0
    ignored: int = 0
    #: input name -> "[code] message", in the order they failed
    failed: dict[str, str] = field(default_factory=dict)
    models: Counter[str] = field(default_factory=Counter)
    fallbacks: int = 0
    started: float = field(default_factory=time.perf_counter)
    #: seconds spent loading the model (or opening the client), not counted in the rate
    load_s: float = 0.0
    interrupted: bool = False

    def succeeded(self, name: str, outcome: Outcome) -> None:
        self.done += 1
        self.failed.pop(name, None)  # watch mode: a file fixed since it failed
        self.models[outcome.model] += 1
        self.fallbacks += outcome.fallback_reason is not None

    def exit_status(self) -> int:
        if self.interrupted:
            return INTERRUPTED
        return 1 if self.failed else 0

    def report(self, out: TextIO) -> None:
        elapsed = time.perf_counter() - self.started - self.load_s
        rate = f", {self.done / elapsed:.2f} images/s" if self.done and elapsed > 0 else ""
        if self.load_s:
            rate += f"; model load {self.load_s:.1f} s"
        models = ", ".join(f"{name} {n}" for name, n in self.models.most_common())
        lines = [
            f"done: {self.done}, skipped: {self.skipped}, failed: {len(self.failed)} "
            f"({elapsed:.1f} s{rate})" + (" - interrupted" if self.interrupted else "")
        ]
        if models:
            extra = f" ({self.fallbacks} by fallback)" if self.fallbacks else ""
            lines.append(f"models: {models}{extra}")
        if self.ignored:
            lines.append(f"ignored: {self.ignored} file(s) without an image extension")
        if self.skipped:
            lines.append("skipped: outputs newer than their inputs (--overwrite redoes them)")
        if self.failed:
            lines.append("failed:")
            lines.extend(f"  {name}: {reason}" for name, reason in self.failed.items())
        out.write("\n".join(lines) + "\n")
        out.flush()


def process(task: Task, remover: Remover) -> tuple[Outcome, Path]:
    """Read, remove the background, write atomically; `FileError` for this input's failures."""
    try:
        data = task.source.read_bytes()
    except OSError as exc:
        raise FileError(f"cannot read: {exc.strerror or exc}", code="read_error") from None
    outcome = remover(data, task.source.name)
    target = task.target
    if outcome.fmt is not None and target.suffix != SUFFIXES[outcome.fmt]:
        # a preset only the service knows chose another format
        target = target.with_suffix(SUFFIXES[outcome.fmt])
    try:
        write_atomic(target, outcome.body)
    except OSError as exc:
        raise FileError(
            f"cannot write {target}: {exc.strerror or exc}", code="write_error"
        ) from None
    return outcome, target


class _Halted(Exception):
    """A task not started because the run is stopping."""


@dataclass
class Runner:
    """Runs tasks on a worker pool and records each result in ``summary``."""

    pool: ThreadPoolExecutor
    remover: Remover
    summary: Summary
    #: per-file lines (watch mode, failures) go here; None: quiet
    log: TextIO | None
    #: set by the first `SetupError`: queued tasks then start no request or model call
    halt: threading.Event = field(default_factory=threading.Event)

    def say(self, line: str) -> None:
        if self.log is not None:
            tqdm.write(line, file=self.log)

    def fail(self, name: str, reason: str) -> None:
        self.summary.failed[name] = reason
        self.say(f"failed: {name}: {reason}")

    def _work(self, task: Task) -> tuple[Outcome, Path]:
        if self.halt.is_set():
            raise _Halted
        try:
            return process(task, self.remover)
        except SetupError:
            self.halt.set()
            raise

    def _record(self, task: Task, future: Future[tuple[Outcome, Path]], verbose: bool) -> None:
        """Count one finished task; `SetupError` (and `_Halted`) propagate."""
        try:
            outcome, target = future.result()
        except FileError as exc:
            self.fail(task.name, f"[{exc.code}] {exc.message}")
        except (SetupError, _Halted):
            raise
        except Exception as exc:  # one bad file must not end a long run
            self.fail(task.name, f"[internal_error] {type(exc).__name__}: {exc}")
        else:
            self.summary.succeeded(task.name, outcome)
            if verbose:
                self.say(f"done: {task.name} -> {target}")

    def run(self, tasks: list[Task], bar: tqdm | None = None, *, verbose: bool = False) -> None:
        """Process ``tasks``; `SetupError` from any of them stops the rest and is raised.

        On Ctrl-C the queued tasks are dropped and the running ones finish (their results
        are written whole) and are counted before the interrupt goes on.
        """
        futures: dict[Future[tuple[Outcome, Path]], Task] = {
            self.pool.submit(self._work, task): task for task in tasks
        }
        recorded: set[Future[tuple[Outcome, Path]]] = set()
        try:
            for future in as_completed(futures):
                recorded.add(future)
                try:
                    self._record(futures[future], future, verbose)
                except _Halted:
                    continue  # the error that halted the run surfaces from its own task
                if bar is not None:
                    bar.update(1)
        except KeyboardInterrupt:
            self.halt.set()
            for future in futures:
                future.cancel()
            for future, task in futures.items():
                if future not in recorded and not future.cancelled():
                    with contextlib.suppress(SetupError, _Halted):
                        self._record(task, future, verbose)
            raise
        except BaseException:
            self.halt.set()
            raise
        finally:
            for future in futures:
                future.cancel()


def plan(found: Scan, *, overwrite: bool, summary: Summary) -> list[Task]:
    """The tasks to run; up-to-date ones are counted as skipped, collisions as failed."""
    summary.ignored = found.ignored
    for task, owner in found.collisions:
        summary.failed[task.name] = collision_reason(task, owner)
    todo = [t for t in found.tasks if overwrite or not up_to_date(t)]
    summary.skipped += len(found.tasks) - len(todo)
    return todo


@dataclass
class Watcher:
    """Polls the folder for new or changed images after the first pass."""

    input_dir: Path
    output_dir: Path
    recursive: bool
    suffix: str
    runner: Runner
    #: stamps of the inputs already handled (done, skipped or failed)
    handled: dict[Path, Stamp] = field(default_factory=dict)
    #: stamps seen by the previous scan, to tell a file still being written
    seen: dict[Path, Stamp] = field(default_factory=dict)

    def remember(self, found: Scan) -> None:
        """Mark what the first pass handled (whatever its result)."""
        for task in found.tasks:
            self.handled[task.source] = task.stamp
        for task, _ in found.collisions:
            self.handled[task.source] = task.stamp

    def poll(self) -> bool:
        """One scan; True if anything new or changed was seen (ready or not)."""
        found = scan(self.input_dir, self.output_dir, recursive=self.recursive, suffix=self.suffix)
        fresh = [t for t in found.tasks if self.handled.get(t.source) != t.stamp]
        ready = [t for t in fresh if self.seen.get(t.source) == t.stamp]
        self.seen = {t.source: t.stamp for t in fresh}
        for task, owner in found.collisions:
            if self.handled.get(task.source) != task.stamp:
                self.handled[task.source] = task.stamp
                self.runner.fail(task.name, collision_reason(task, owner))
        todo = [t for t in ready if not up_to_date(t)]
        self.runner.summary.skipped += len(ready) - len(todo)
        self.runner.run(todo, verbose=True)
        for task in ready:
            self.handled[task.source] = task.stamp
        return bool(fresh)

    def loop(self, interval_s: float, max_idle_s: float | None) -> None:
        """Poll until ``max_idle_s`` seconds pass with nothing new (None: until Ctrl-C)."""
        until = f"stops after {max_idle_s:g} s idle" if max_idle_s else "Ctrl-C stops"
        self.runner.say(f"watching {self.input_dir} every {interval_s:g} s ({until})")
        last_activity = time.monotonic()
        while True:
            time.sleep(interval_s)
            if self.poll():
                last_activity = time.monotonic()
            elif max_idle_s and time.monotonic() - last_activity >= max_idle_s:
                return


DESCRIPTION = """\
Remove the background of every image in INPUT_DIR (JPEG, PNG, WebP, BMP, TIFF; -r for
subfolders), writing each result under OUTPUT_DIR at the same relative path with the
extension of its format. Resumable: an output newer than its input is skipped (use
--overwrite after changing options). Bad files are reported and skipped; the run ends
with a summary, exit status 1 if any file failed, 2 if nothing could run.

examples:
  bgremove p photos/ cutouts/
  bgremove p photos/ listings/ -r --preset marketplace-white
  bgremove p photos/ cutouts/ --watch
  bgremove p photos/ cutouts/ --url http://localhost:8000 --jobs 8
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``p``."""
    parser = subparsers.add_parser(
        "p",
        help="remove the background of every image in a folder (resumable, --watch)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("input_dir", metavar="INPUT_DIR", type=Path, help="folder of images")
    parser.add_argument("output_dir", metavar="OUTPUT_DIR", type=Path, help="results folder")
    run_group = parser.add_argument_group("folder processing")
    run_group.add_argument("-r", "--recursive", action="store_true", help="also process subfolders")
    run_group.add_argument(
        "--overwrite", action="store_true", help="redo outputs that are newer than their inputs"
    )
    run_group.add_argument(
        "-j",
        "--jobs",
        type=positive_int,
        default=None,
        metavar="N",
        help="images in flight at once; default: one per CPU (2 to 8) in-process (the model "
        f"runs one at a time, the other steps overlap it), {REMOTE_JOBS} with --url",
    )
    run_group.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar with rate and ETA on stderr; default: when stderr is a terminal",
    )
    run_group.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bar nor per-file lines"
    )
    watch = parser.add_argument_group("watch mode")
    watch.add_argument(
        "-w",
        "--watch",
        action="store_true",
        help="after the first pass, keep processing images as they arrive or change",
    )
    watch.add_argument(
        "--watch-interval",
        type=positive_float,
        default=1.0,
        metavar="SECONDS",
        help="seconds between scans of INPUT_DIR (default: 1)",
    )
    watch.add_argument(
        "--max-idle",
        type=positive_float,
        default=None,
        metavar="SECONDS",
        help="stop watching after this long without a new or changed image "
        "(default: run until Ctrl-C)",
    )
    add_option_flags(parser)
    add_engine_flags(parser)
    parser.set_defaults(func=run)


def _check_dirs(args: argparse.Namespace) -> None:
    source, target = args.input_dir, args.output_dir
    if not source.is_dir():
        raise UsageError(f"INPUT_DIR {source} is not a folder", code="bad_input_dir")
    if target.exists() and not target.is_dir():
        raise UsageError(f"OUTPUT_DIR {target} exists and is not a folder", code="bad_output_dir")
    if source.resolve() == target.resolve():
        raise UsageError(
            "OUTPUT_DIR must differ from INPUT_DIR: results would be taken for inputs",
            code="bad_output_dir",
        )
    if (args.max_idle is not None) and not args.watch:
        raise UsageError("--max-idle applies to --watch", code="usage")


def run(args: argparse.Namespace) -> int:
    """Process the folder (and watch it); exit 0, 1 if any file failed, 130 on Ctrl-C.

    In watch mode Ctrl-C is the way to stop: the status then says whether files failed.
    """
    from bgremove.engine import prepare  # the pipeline and a client: not for --help

    _check_dirs(args)
    prepared = prepare(args)
    suffix = SUFFIXES[prepared.resolved.fmt]
    summary = Summary()
    log = None if args.quiet else sys.stderr
    show_bar = log is not None and (
        args.progress if args.progress is not None else sys.stderr.isatty()
    )
    found = scan(args.input_dir, args.output_dir, recursive=args.recursive, suffix=suffix)
    todo = plan(found, overwrite=args.overwrite, summary=summary)
    jobs = args.jobs or default_jobs(prepared.remote)
    try:
        if todo or args.watch:  # nothing to do: no model to load
            loading = time.perf_counter()
            with prepared.open() as engine, ThreadPoolExecutor(jobs, "bgremove") as pool:
                summary.load_s = time.perf_counter() - loading
                runner = Runner(pool, engine.remover, summary, log)
                runner.say(f"{len(todo)} image(s) to process with {engine.where}, {jobs} jobs")
                with tqdm(
                    total=len(todo),
                    unit="img",
                    desc="bgremove",
                    file=sys.stderr,
                    disable=not show_bar,
                    dynamic_ncols=True,
                ) as bar:
                    runner.run(todo, bar)
                if args.watch:
                    watcher = Watcher(
                        args.input_dir, args.output_dir, args.recursive, suffix, runner
                    )
                    watcher.remember(found)
                    watcher.loop(args.watch_interval, args.max_idle)
    except KeyboardInterrupt:
        summary.interrupted = not args.watch
    summary.report(sys.stdout)
    return summary.exit_status()
