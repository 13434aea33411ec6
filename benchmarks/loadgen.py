"""HTTP load for the drills: what a client saw, closed-loop capacity, open-loop arrivals.

Shared by the single-node drill (`load_fault`) and the cluster drills (`cluster_*`), so
that "lost" means the same everywhere: anything but 2xx, 429 and 503 with `Retry-After`
(timeouts and connection errors included). Traffic goes to the URL given, 127.0.0.1 in
every drill; every loop is bounded in count and time.
"""

from __future__ import annotations

import itertools
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT.parent / "shared" / "images"
MAX_WORKERS = 96
#: Above every shipped config's proxy `request_timeout_s` (120): a hang shows as a timeout.
CLIENT_TIMEOUT_S = 150.0

Photo = tuple[str, bytes]
#: Form fields of one request (options); empty for a plain cut-out.
Fields = dict[str, str]


@dataclass(frozen=True)
class Event:
    """One finished request: when (monotonic), its outcome, its latency, lost or not."""

    done: float
    outcome: str
    latency: float
    lost: bool


class Results:
    """What the clients saw, thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.statuses: Counter[str] = Counter()
        self.models: Counter[str] = Counter()
        self.latencies: list[float] = []
        self.lost: list[str] = []
        self.events: list[Event] = []
        self.sent = 0

    def record(self, outcome: str, latency: float, lost: str | None, model: str | None) -> None:
        with self.lock:
            self.statuses[outcome] += 1
            if model:
                self.models[model] += 1
            if outcome == "200":
                self.latencies.append(latency)
            if lost:
                self.lost.append(lost)
            self.events.append(Event(time.monotonic(), outcome, latency, lost is not None))

    def since(self, start: float, end: float = float("inf")) -> list[Event]:
        with self.lock:
            return [e for e in self.events if start <= e.done < end]


def percentile(values: list[float], q: float) -> float | None:
    """The q-quantile (0..1) of `values` by nearest rank; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))]


def summary(results: Results) -> dict[str, object]:
    """Status counts, lost requests, p50/p99 of the 200s."""
    latencies = results.latencies
    return {
        "requests_sent": results.sent,
        "statuses": dict(results.statuses),
        "models": dict(results.models),
        "lost": len(results.lost),
        "lost_examples": results.lost[:5],
        "p50_s": round(statistics.median(latencies), 3) if latencies else None,
        "p99_s": round(percentile(latencies, 0.99) or 0.0, 3) if latencies else None,
    }


def one_request(
    client: httpx.Client,
    url: str,
    photo: Photo,
    results: Results,
    fields: Fields | None = None,
) -> None:
    started = time.perf_counter()
    try:
        response = client.post(url, files={"file": photo}, data=fields, timeout=CLIENT_TIMEOUT_S)
    except httpx.HTTPError as exc:
        when = time.strftime("%H:%M:%S")
        results.record(type(exc).__name__, 0.0, f"{when} {type(exc).__name__}: {exc}", None)
        return
    latency = time.perf_counter() - started
    status = response.status_code
    retryable = status == 429 or (status == 503 and "retry-after" in response.headers)
    lost = (
        None
        if (200 <= status < 300 or retryable)
        else f"{time.strftime('%H:%M:%S')} {status}: {response.text[:160]}"
    )
    outcome = f"{status}" + ("+retry-after" if retryable else "")
    results.record(outcome, latency, lost, response.headers.get("x-model-used"))


def rss_mib(pid: int) -> float | None:
    """Resident memory of a process from /proc (Linux), MiB; None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def load_photos(folder: Path = IMAGES) -> list[Photo]:
    return [
        (p.name, p.read_bytes())
        for p in sorted(folder.iterdir())
        if p.suffix.lower() in {".jpg", ".png"}
    ]


def closed_loop(
    url: str,
    photos: list[Photo],
    clients: int,
    seconds: float,
    requests: Iterator[tuple[Photo, Fields]] | None = None,
) -> float:
    """Throughput (200s per second) of `clients` back-to-back clients: the capacity.
    `requests` (photo and options) default to every photo in turn, plain."""
    results = Results()
    deadline = time.monotonic() + seconds
    cycle = requests if requests is not None else plain(photos)
    lock = threading.Lock()

    def client_loop() -> None:
        with httpx.Client() as client:
            while time.monotonic() < deadline:
                with lock:
                    photo, fields = next(cycle)
                one_request(client, url, photo, results, fields)

    started = time.monotonic()
    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results.statuses["200"] / (time.monotonic() - started)


def open_loop(
    url: str,
    requests: Iterator[tuple[Photo, Fields]],
    rate: Callable[[float], float],
    seconds: float,
    results: Results,
    stop: threading.Event | None = None,
) -> None:
    """Send requests open-loop for `seconds`: `rate(t)` per second at `t` s from the start
    (0: pause), whatever the answers; returns when every request has its answer."""
    limits = httpx.Limits(max_connections=MAX_WORKERS)
    started = time.monotonic()
    next_due = started
    with httpx.Client(limits=limits) as client, ThreadPoolExecutor(MAX_WORKERS) as pool:
        for _ in range(10_000_000):
            now = time.monotonic()
            if now - started >= seconds or (stop is not None and stop.is_set()):
                break
            per_s = rate(now - started)
            if per_s <= 0:
                time.sleep(0.2)
                next_due = time.monotonic()
                continue
            time.sleep(max(0.0, next_due - now))
            next_due = max(next_due, now - 1.0) + 1.0 / per_s
            photo, fields = next(requests)
            with results.lock:
                results.sent += 1
            pool.submit(one_request, client, url, photo, results, fields)


def plain(photos: list[Photo]) -> Iterator[tuple[Photo, Fields]]:
    """Every photo in turn, as plain cut-outs."""
    return ((photo, {}) for photo in itertools.cycle(photos))
