"""The INT8 u2net made by the tier itself, in the background, where it will serve.

Why: on CPUs without native bf16 INT8 runs rembg's u2net about 2x faster than f32
(docs/benchmarks.md), but only if someone runs `bgremove quantize` on each CPU type. So a
replica serving f32 makes the model itself, with the same recipe, checks and guard, from
photos the package ships (`int8_photos/`, Apache-2.0): crops calibrate, whole photos are
the acceptance check, and only a model within rembg's tolerance on every photo is written.

The build runs in a child process at low priority on at most ``threads`` CPUs, so requests
in flight keep the replica's CPUs; a lock file beside the weights makes one process build
while the others (replicas, later starts, other pods on the same volume) wait for its
result. The model and its report are written once per CPU flag set and weights file
(`models.u2net_int8.int8_files`); a refusal is written too, so nobody builds it again.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from models.u2net_int8 import Int8Report, Int8Status, int8_files, int8_status, quantize_u2net
from models.u2net_weights import U2NetWeights, resolve_u2net_weights

if TYPE_CHECKING:
    from filelock import FileLock

log = logging.getLogger("models.u2net")

#: the photos shipped with the package (see its README.md for their licence)
PHOTOS = Path(__file__).with_name("int8_photos")
#: how much of a failed child's output the log and the state keep
_OUTPUT_TAIL = 2000

#: `off`: nothing to build (the reason says why); `waiting`: another process builds it;
#: `building`: this one does; `ready`: an INT8 model is there; `refused`: out of tolerance
#: on this CPU; `failed`: the build broke (it is tried again at the next start)
BuildState = Literal["off", "waiting", "building", "ready", "refused", "failed"]


@dataclass(frozen=True)
class BuildBudget:
    """What a background build may take from the machine it shares with requests."""

    #: CPUs (and OpenVINO threads) the child may use
    threads: int = 1
    #: the child's niceness: the replica's request threads come first
    nice: int = 10
    #: the child is killed past this (and the state is `failed`)
    timeout_s: float = 1800.0
    #: Linux's SCHED_IDLE for the child too: it runs only on CPU time nothing else wants.
    #: Beside a saturated 2-thread replica (2-core EPYC, docs/benchmarks.md) nice 10 alone
    #: built in 180 s with p50/p99 +52%/2.6x meanwhile; SCHED_IDLE in 283-458 s with p50
    #: +12-14%, and in 193 s beside a replica at 70% of its capacity.
    idle: bool = True


def shipped_photos(folder: Path = PHOTOS) -> list[tuple[str, np.ndarray]]:
    """(name, RGB array) of every photo in ``folder``, by name."""
    from PIL import Image

    photos = []
    for path in sorted(folder.glob("*.jpg")):
        with Image.open(path) as image:
            photos.append((path.name, np.asarray(image.convert("RGB"))))
    if not photos:
        raise FileNotFoundError(f"no INT8 check photos in {folder}: the package is incomplete")
    return photos


def build_lock(weights: U2NetWeights) -> FileLock:
    """The lock file beside the INT8 model of these weights on this CPU: whoever holds it
    builds; the others (replicas, `bgremove quantize`, other pods on the volume) wait."""
    from filelock import FileLock

    return FileLock(int8_files(weights)[0].with_suffix(".lock"))


def build_here(weights: U2NetWeights, threads: int | None = None) -> Int8Report:
    """Quantize in this process with the shipped photos (blocking: a pinned ``int8`` start
    and the child process both come here)."""
    return quantize_u2net(weights, shipped_photos(), threads=threads)


class Int8Builder:
    """Makes (or waits for) the INT8 model of one weights file on this CPU, off the serving
    path, and calls ``on_ready`` with the model once one is usable.

    ``state``/``reason`` are for health; ``start`` runs it in a daemon thread, ``run``
    in the caller's (tests, and `bgremove` if it ever builds).
    """

    def __init__(
        self,
        weights: U2NetWeights,
        budget: BuildBudget,
        on_ready: Callable[[Path], None] | None = None,
    ) -> None:
        self.weights, self.budget, self._on_ready = weights, budget, on_ready
        self.state: BuildState = "off"
        self.reason = "not started"
        self.builds = 0
        self._since = time.monotonic()
        self._thread: threading.Thread | None = None

    def as_dict(self) -> dict[str, Any]:
        """The build's state for health: state, reason, seconds in that state."""
        return {
            "state": self.state,
            "reason": self.reason,
            "for_s": round(time.monotonic() - self._since, 1),
        }

    def _set(self, state: BuildState, reason: str = "") -> None:
        self.state, self.reason, self._since = state, reason, time.monotonic()
        log.info("INT8 %s: %s%s", self.weights.name, state, f" ({reason})" if reason else "")

    def start(self) -> None:
        """Build in the background; returns at once."""
        self._thread = threading.Thread(target=self.run, name="int8-build", daemon=True)
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> BuildState:
        """Find, wait for or make the model; call ``on_ready`` if one is usable."""
        try:
            status = self._make()
        except Exception as exc:  # a broken build must never take the replica down
            log.exception("INT8 build of %s failed", self.weights.name)
            self._set("failed", f"{type(exc).__name__}: {exc}")
            return self.state
        self._settle(status)
        if self.state == "ready" and status.model is not None and self._on_ready is not None:
            try:
                self._on_ready(status.model)
            except Exception as exc:
                log.exception("switching %s to INT8 failed", self.weights.name)
                self._set("failed", f"switching to INT8: {type(exc).__name__}: {exc}")
        return self.state

    def _make(self) -> Int8Status:
        from filelock import Timeout

        status = int8_status(self.weights)
        if status.state not in ("missing", "stale"):
            return status
        folder = self.weights.path.parent
        if not os.access(folder, os.W_OK):  # the path is logged, not shown in health
            log.info("INT8 %s: %s is not writable", self.weights.name, folder)
            return Int8Status(
                "unavailable", "the weights' folder is not writable: nowhere to keep it"
            )
        lock = build_lock(self.weights)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            self._set("waiting", "another process is building it")
            try:
                lock.acquire(timeout=self.budget.timeout_s)
            except Timeout:
                waited = f"waited {self.budget.timeout_s:.0f} s for another process's build"
                return Int8Status("stale", waited)
        try:
            status = int8_status(self.weights)  # made (or refused) while this one waited
            if status.state in ("missing", "stale"):
                self._set("building", f"{self.budget.threads} CPU(s) at nice {self.budget.nice}")
                self.builds += 1
                self._build_in_child()
                status = int8_status(self.weights)
        finally:
            lock.release()
        return status

    def _build_in_child(self) -> None:
        command = [
            sys.executable,
            "-m",
            "models.u2net_int8_build",
            "--model",
            self.weights.name,
            "--home",
            str(self.weights.path.parent),
            "--threads",
            str(self.budget.threads),
            "--nice",
            str(self.budget.nice),
            *(["--idle"] if self.budget.idle else []),
            "--parent",
            str(os.getpid()),
        ]
        # the child imports this package from where this process has it (a Ray worker's
        # working directory need not be the project's)
        package_root = str(Path(__file__).resolve().parents[1])
        path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
        started = time.monotonic()
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=self.budget.timeout_s,
            check=False,
            env={**os.environ, "PYTHONPATH": path},
        )
        output = (done.stdout + done.stderr)[-_OUTPUT_TAIL:]
        if done.returncode not in (0, 2):  # 2: built and refused (the report says why)
            raise RuntimeError(f"the INT8 build exited with {done.returncode}: {output}")
        log.info("INT8 build of %s took %.0f s", self.weights.name, time.monotonic() - started)

    def _settle(self, status: Int8Status) -> None:
        if status.state == "usable":
            self._set("ready", f"{status.model.name if status.model else ''}")
        elif status.state == "refused":
            self._set("refused", status.reason)
        elif status.state == "unavailable":
            self._set("off", status.reason)
        else:
            self._set("failed", status.reason)


def _die_with_parent(parent: int) -> None:
    """Linux: have the kernel send this child SIGTERM when the replica that started it dies.

    A replica killed mid-build (SIGKILL, a lost node's pod) releases the build lock with its
    death; a build left running without the lock would race the build of the replica that
    takes the lock next. Elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    if ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM) != 0:
        log.warning("INT8 build: cannot follow the parent's death (errno %d)", ctypes.get_errno())
    if os.getppid() != parent:  # it died before the prctl
        raise SystemExit(1)


def _limit_cpus(threads: int) -> None:
    """Keep this process on ``threads`` of the CPUs it may use (the last ones: a replica's
    threads start from the first), where the platform allows it."""
    if not hasattr(os, "sched_getaffinity"):
        return
    allowed = sorted(os.sched_getaffinity(0))
    if threads < len(allowed):
        os.sched_setaffinity(0, allowed[-threads:])


def main(argv: list[str] | None = None) -> int:
    """The child: lower its priority and CPUs before anything heavy loads, then build.

    Exit 0 with a usable model, 2 when refused (out of tolerance), 1 when it broke."""
    parser = argparse.ArgumentParser(prog="python -m models.u2net_int8_build")
    parser.add_argument("--model", default="u2net")
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--nice", type=int, default=10)
    parser.add_argument("--idle", action="store_true", help="SCHED_IDLE (Linux)")
    parser.add_argument("--parent", type=int, help="stop when this process (the replica) dies")
    args = parser.parse_args(argv)
    if args.parent is not None:
        _die_with_parent(args.parent)
    os.nice(args.nice)
    if args.idle and hasattr(os, "SCHED_IDLE"):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    _limit_cpus(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    weights = resolve_u2net_weights(args.model, home=args.home, allow_download=False)
    report = build_here(weights, threads=args.threads)
    return 0 if report.within_tolerance else 2


if __name__ == "__main__":
    sys.exit(main())
