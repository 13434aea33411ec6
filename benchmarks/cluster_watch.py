"""What a cluster drill records over time, and how it is written down.

A sampler thread takes, every few seconds: replicas per deployment (running and target,
from Serve's REST API, as `serve status`), Serve's queue figures (the nodes' Prometheus
ports), health, what clients saw in the last interval (status counts, p50/p99) and the
RSS of every Serve process. Rows go to CSV and to a PNG drawn with Pillow (no plotting
dependency); `rss_slopes` turns the RSS samples into a growth rate per process.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from PIL import Image, ImageDraw

from benchmarks.cluster_nodes import LocalCluster
from benchmarks.loadgen import Results, percentile, rss_mib

GROUPS = ("Ingress", "U2Net")


class Sampler:
    """Samples a cluster every `interval_s` in a thread, until `stop()` (bounded by
    `max_s`); `metrics=False` skips the Prometheus scrapes (they cost CPU)."""

    def __init__(
        self,
        cluster: LocalCluster,
        app: str,
        results: Results,
        interval_s: float = 2.0,
        max_s: float = 7200.0,
        metrics: bool = True,
    ) -> None:
        self.cluster = cluster
        self.metrics = metrics
        self.app = app
        self.results = results
        self.interval_s = interval_s
        self.max_s = max_s
        self.rows: list[dict[str, Any]] = []
        self.rss: dict[str, list[tuple[float, float]]] = {}
        self.marks: list[tuple[float, str]] = []
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Sampler:
        self.started = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def mark(self, label: str) -> None:
        """A labelled moment (a load step, a kill) for the CSV and the plot."""
        self.marks.append((time.monotonic() - self.started, label))

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(self.interval_s):
            now = time.monotonic()
            if now - self.started > self.max_s:
                return
            with contextlib.suppress(httpx.HTTPError, KeyError, ValueError, OSError):
                self.rows.append(self.sample(last, now))
            last = now

    def sample(self, window_start: float, now: float) -> dict[str, Any]:
        t = round(now - self.started, 1)
        row: dict[str, Any] = {"t_s": t}
        deployments = self.cluster.deployments(self.app)
        for name in GROUPS:
            # blank while Serve lists no such deployment (the app being rebuilt in a rollout)
            dep = deployments.get(name)
            running = [r for r in (dep or {}).get("replicas", []) if r["state"] == "RUNNING"]
            row[f"{name}_replicas"] = "" if dep is None else len(running)
            row[f"{name}_target"] = "" if dep is None else dep.get("target_num_replicas", 0)
        metrics = self.cluster.metrics() if self.metrics else {}
        for name in GROUPS:
            row[f"{name}_ongoing"] = metrics.get(f"ongoing:{name}", "")
            row[f"{name}_queued"] = metrics.get(f"queued:{name}", "")
        row["health"] = health_status(self.cluster.serve_url)
        events = self.results.since(window_start, now)
        outcomes = Counter(e.outcome for e in events)
        latencies = [e.latency for e in events if e.outcome == "200"]
        row["ok"] = outcomes.get("200", 0)
        row["retry_after"] = sum(v for k, v in outcomes.items() if "retry-after" in k)
        row["lost"] = sum(1 for e in events if e.lost)
        row["p50_s"] = _round(percentile(latencies, 0.5))
        row["p99_s"] = _round(percentile(latencies, 0.99))
        row["marks"] = ";".join(label for at, label in self.marks if t - self.interval_s < at <= t)
        for name, pid in self.cluster.serve_pids().items():
            rss = rss_mib(pid)
            if rss is not None:
                self.rss.setdefault(f"{name}:{pid}", []).append((t, rss))
        return row


def health_status(url: str) -> str:
    try:
        return str(httpx.get(f"{url}/api/v1/health", timeout=10).json().get("status"))
    except (httpx.HTTPError, ValueError):
        return "no-answer"


def _round(value: float | None) -> float | str:
    return "" if value is None else round(value, 3)


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fields: list[str] = []
    for row in rows:
        fields.extend(k for k in row if k not in fields)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def slope_mib_per_min(samples: list[tuple[float, float]]) -> float:
    """Theil-Sen slope of (t_s, MiB) samples, MiB per minute: the median of the slopes
    between every two samples, so that one spike or one drop (a GC, a batch of large
    photos) does not make a trend."""
    if len(samples) > 300:  # pairs grow with the square: thin evenly
        step = len(samples) / 300
        samples = [samples[int(i * step)] for i in range(300)]
    slopes = sorted(
        (v1 - v0) / (t1 - t0)
        for i, (t0, v0) in enumerate(samples)
        for t1, v1 in samples[i + 1 :]
        if t1 > t0
    )
    return 0.0 if not slopes else slopes[len(slopes) // 2] * 60


def rss_slopes(
    rss: dict[str, list[tuple[float, float]]], skip_s: float = 0.0, min_samples: int = 8
) -> dict[str, dict[str, float]]:
    """Per process: samples, first and last RSS, slope (MiB/min) after the first `skip_s`
    seconds of its life (start-up allocations are not a leak); only processes with at
    least `min_samples` samples left, fewer say nothing about a trend."""
    out: dict[str, dict[str, float]] = {}
    for name, samples in rss.items():
        if not samples:
            continue
        born = samples[0][0]
        kept = [(t, v) for t, v in samples if t - born >= skip_s]
        if len(kept) < min_samples:
            continue
        out[name] = {
            "samples": len(kept),
            "span_s": round(kept[-1][0] - kept[0][0], 1),
            "first_mib": round(kept[0][1], 1),
            "last_mib": round(kept[-1][1], 1),
            "slope_mib_per_min": round(slope_mib_per_min(kept), 2),
        }
    return out


# --- the plot ---------------------------------------------------------------------------

WIDTH, PANEL_H, MARGIN = 1000, 200, 60
COLOURS = {
    "Ingress": (31, 119, 180),
    "U2Net": (214, 39, 40),
    "p50": (44, 160, 44),
    "p99": (148, 103, 189),
    "ok": (44, 160, 44),
    "retry": (255, 127, 14),
    "lost": (0, 0, 0),
}


def plot(
    rows: list[dict[str, Any]], marks: list[tuple[float, str]], title: str, path: Path
) -> None:
    """Three panels over time: replicas (running, target dashed), p50/p99 latency, answers
    per interval (200, 503+Retry-After, lost); load steps and faults as vertical lines."""
    panels = [
        ("replicas", [(f"{g}_replicas", g, False) for g in GROUPS]
         + [(f"{g}_target", g, True) for g in GROUPS]),
        ("latency s (200s)", [("p50_s", "p50", False), ("p99_s", "p99", False)]),
        ("answers / interval", [("ok", "ok", False), ("retry_after", "retry", False),
                                ("lost", "lost", False)]),
    ]  # fmt: skip
    height = MARGIN + len(panels) * (PANEL_H + MARGIN)
    image = Image.new("RGB", (WIDTH, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((MARGIN, 10), title, fill="black")
    t_max = max([r["t_s"] for r in rows] + [1.0])
    x_of = lambda t: MARGIN + (WIDTH - 2 * MARGIN) * t / t_max  # noqa: E731
    for index, (label, series) in enumerate(panels):
        top = MARGIN + index * (PANEL_H + MARGIN)
        bottom = top + PANEL_H
        values = [float(r[k]) for r in rows for k, _, _ in series if r.get(k) not in ("", None)]
        v_max = max([*values, 1.0])
        y_of = lambda v, b=bottom, m=v_max: b - PANEL_H * v / m  # noqa: E731
        draw.rectangle((MARGIN, top, WIDTH - MARGIN, bottom), outline=(150, 150, 150))
        draw.text((MARGIN, top - 14), f"{label} (max {v_max:g})", fill="black")
        for at, text in marks:
            x = x_of(at)
            draw.line((x, top, x, bottom), fill=(190, 190, 190))
            if index == 0:
                draw.text((x + 2, top + 2), text, fill=(90, 90, 90))
        for n, (key, colour_key, dashed) in enumerate(series):
            colour = COLOURS[colour_key]
            points = [
                (x_of(r["t_s"]), y_of(float(r[key]))) for r in rows if r.get(key) not in ("", None)
            ]
            for (x0, y0), (x1, y1) in itertools.pairwise(points):
                if not dashed or int(x0 / 6) % 2 == 0:
                    draw.line((x0, y0, x1, y1), fill=colour, width=2)
            legend = f"{key}" + (" (dashed)" if dashed else "")
            draw.text((WIDTH - MARGIN - 170, top + 4 + 12 * n), legend, fill=colour)
        draw.text((WIDTH - MARGIN - 30, bottom + 4), f"{t_max:.0f} s", fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
