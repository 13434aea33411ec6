"""Admission control of one ingress replica: a budget of pixels in flight.

A request count alone does not bound memory (one 50 MP photo weighs as much as a
thousand thumbnails), so each request reserves its input plus output pixels,
known from the image header before anything is decoded, and gives them back when
it is answered. A request that does not fit is refused at once with 503 and
Retry-After, instead of queueing into a timeout or taking the replica down.
"""

from __future__ import annotations

import itertools
import threading

from deployments.errors import OverloadedError


class PixelBudget:
    """Pixels held by requests in flight, thread-safe (decoding runs in worker threads)."""

    def __init__(self, capacity: int, retry_after_s: int) -> None:
        self.capacity = capacity
        self.retry_after_s = retry_after_s
        self._in_use = 0
        self._lock = threading.Lock()

    @property
    def in_use(self) -> int:
        return self._in_use

    def acquire(self, pixels: int) -> None:
        """Reserve ``pixels`` or raise OverloadedError; pair with `release`."""
        with self._lock:
            if self._in_use + pixels > self.capacity:
                raise OverloadedError(
                    f"this replica is busy ({self._in_use} of {self.capacity} pixels in "
                    f"flight; this request needs {pixels}): retry after "
                    f"{self.retry_after_s} s",
                    retry_after_s=self.retry_after_s,
                )
            self._in_use += pixels

    def release(self, pixels: int) -> None:
        with self._lock:
            self._in_use -= pixels


class Reservation:
    """What one request holds of a budget; releasing it twice is harmless."""

    def __init__(self, budget: PixelBudget) -> None:
        self._budget = budget
        self.pixels = 0

    def acquire(self, pixels: int) -> None:
        self._budget.acquire(pixels)
        self.pixels += pixels

    def release(self) -> None:
        if self.pixels:
            self._budget.release(self.pixels)
            self.pixels = 0


class DeadlineAdmission:
    """Admit a mask request to a model group only if it can likely be answered in time.

    A bounded queue in requests cannot know how long a request will wait: that depends on
    the model, the CPU and how many replicas are alive right now. This measures it. While
    the group is busy (requests still in flight when one completes), the time between
    completions is the group's service interval as this ingress sees it; times the live
    replicas then, it is one replica's interval, so the estimate follows the group's
    capacity the moment the monitor sees a replica die, stop for a rolling restart or
    come back. A new request waits about `(in flight + 1) x replica interval / live
    replicas`. Between polls, the age of the oldest request in flight, spread over those
    ahead, bounds the interval from below (completions stop before any average shows
    it). When the estimate exceeds `share` of the timeout the request is refused at once
    (the caller falls back, or answers 503 with Retry-After) instead of queueing into a
    timeout; `share` leaves room for the group to lose half its capacity meanwhile. When
    it loses more, `hopeless` names the queued requests that can no longer finish in
    time, so they are answered 503 now rather than 504 at their deadline. With nothing in
    flight a request is always admitted, so a stale estimate cannot lock a group out.
    Single-threaded: used from the ingress's event loop only.
    """

    def __init__(self, share: float = 0.5, smoothing: float = 0.2) -> None:
        self.share = share
        self._smoothing = smoothing
        #: seconds between completions of one replica (EWMA); None until measured
        self.replica_interval_s: float | None = None
        self._last_completion: float | None = None
        self._started: dict[int, float] = {}
        self._tokens = itertools.count()

    @property
    def in_flight(self) -> int:
        return len(self._started)

    def _interval_s(self, now: float, replicas: int) -> float | None:
        if self.replica_interval_s is None:
            return None
        interval = self.replica_interval_s / max(replicas, 1)
        if self._started:
            oldest_age = now - min(self._started.values())
            interval = max(interval, oldest_age / len(self._started))
        return interval

    def predicted_wait_s(self, now: float, replicas: int = 1) -> float | None:
        """Expected time to answer one more request; None until measured."""
        interval = self._interval_s(now, replicas)
        return None if interval is None else (self.in_flight + 1) * interval

    def admit(self, timeout_s: float, now: float, replicas: int = 1) -> bool:
        wait = self.predicted_wait_s(now, replicas)
        return self.in_flight == 0 or wait is None or wait <= self.share * timeout_s

    def started(self, now: float) -> int:
        """Register a request in flight; returns the token `finished` takes."""
        token = next(self._tokens)
        self._started[token] = now
        return token

    def hopeless(self, token: int, now: float, deadline: float, replicas: int) -> bool:
        """Whether a request still queued behind others cannot finish by `deadline`.

        The first `replicas` requests in flight are likely being served and are never
        named: an answer may be a moment away, and a mask half made is not thrown away.
        """
        if token not in self._started:
            return False
        position = list(self._started).index(token)  # tokens are in start order
        interval = self._interval_s(now, replicas)
        if interval is None or position < max(replicas, 1):
            return False
        return now + (position + 1) * interval > deadline

    def finished(self, token: int, now: float, *, served: bool, replicas: int = 1) -> None:
        """Called on every answer; only served masks measure the service interval
        (a replica that fails fast says nothing about how long a mask takes)."""
        self._started.pop(token, None)
        if not served:
            return
        if self._last_completion is not None:
            sample = (now - self._last_completion) * max(replicas, 1)
            if self.replica_interval_s is None:
                self.replica_interval_s = sample
            else:
                self.replica_interval_s += self._smoothing * (sample - self.replica_interval_s)
        # the next interval is a service interval only if work is still queued now
        self._last_completion = now if self._started else None
