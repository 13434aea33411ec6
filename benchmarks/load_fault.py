"""Load and fault drill: overload the service while killing replicas and rolling it.

Starts Ray and Serve on 127.0.0.1 with a Serve config (default: configs/cpu.yaml with 2
replicas per group), measures capacity with a closed loop of clients, then sends requests
open-loop at `--multiple` x that capacity for `--minutes`, kills a model replica every
`--kill-every` seconds and does one rolling restart (a `serve deploy` with changed args)
half-way. It prints what a client saw: requests sent, status counts, lost requests
(anything but 2xx, 429, and 503 with Retry-After, including timeouts and connection
errors), p50/p99 latency, and the peak RSS of each replica.

    .venv/bin/python -m benchmarks.load_fault --minutes 10 --multiple 2 --kill-every 60

Traffic goes to 127.0.0.1 only; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import ray
import yaml
from ray import serve

from benchmarks.loadgen import (
    MAX_WORKERS,
    ROOT,
    Results,
    closed_loop,
    load_photos,
    one_request,
    rss_mib,
    summary,
)
from models.hardware import cpu_description as cpu_model


def replica_pids() -> dict[str, int]:
    from ray.util.state import list_actors

    address = ray.get_runtime_context().gcs_address  # the drill's own cluster
    actors = list_actors(address=address, filters=[("state", "=", "ALIVE")], limit=1000)
    return {a.name: a.pid for a in actors if a.name and a.name.startswith("SERVE_REPLICA::")}


def sample_rss(peaks: dict[str, float], stop: threading.Event) -> None:
    while not stop.wait(2.0):
        for name, pid in replica_pids().items():
            rss = rss_mib(pid)
            if rss is not None:
                peaks[name] = max(peaks.get(name, 0.0), rss)


def kill_loop(app: str, every_s: float, stop: threading.Event, log: list[str]) -> None:
    rng = random.Random(0)
    groups = ["U2Net", "RMBG2"]
    turn = 0
    while not stop.wait(every_s):
        group = groups[turn % len(groups)]
        turn += 1
        names = [n for n in replica_pids() if n.startswith(f"SERVE_REPLICA::{app}#{group}#")]
        if not names:
            continue
        victim = rng.choice(names)
        ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
        log.append(f"{time.strftime('%H:%M:%S')} killed {victim}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "cpu.yaml"))
    parser.add_argument("--replicas", type=int, default=2, help="replicas per group")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--multiple", type=float, default=2.0, help="x measured capacity")
    parser.add_argument("--kill-every", type=float, default=60.0, help="seconds")
    parser.add_argument("--capacity-clients", type=int, default=4)
    parser.add_argument("--capacity-seconds", type=float, default=30.0)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--json", help="write the summary here too")
    opts = parser.parse_args()

    config = yaml.safe_load(Path(opts.config).read_text())
    app_cfg = config["applications"][0]
    args = dict(app_cfg.get("args") or {})
    args.update(
        u2net_num_replicas=opts.replicas,
        ingress_num_replicas=opts.replicas,
        ingress_num_cpus=0.25,
        u2net_num_cpus=0.25,
        rmbg_num_cpus=0.25,
    )
    if args.get("model", "rmbg-2.0") == "rmbg-2.0":
        args["rmbg_num_replicas"] = opts.replicas
    http = config.get("http_options", {})

    context = ray.init(num_cpus=8, logging_level="warning", include_dashboard=True)
    dashboard = f"http://{context.dashboard_url}"
    app_name = app_cfg["name"]
    config["http_options"] = {**http, "host": "127.0.0.1", "port": opts.port}
    config["proxy_location"] = "HeadOnly"

    def deploy(changed: dict[str, object]) -> None:
        """`serve deploy` of the config with changed args: a rolling restart of what they reach."""
        from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

        app_cfg["args"] = {**args, **changed}
        ServeSubmissionClient(dashboard).deploy_applications(config)
        print(f"{time.strftime('%H:%M:%S')} deployed args change {changed or '(initial)'}")

    _wait_until_running(app_name, deploy)
    url = f"http://127.0.0.1:{opts.port}/api/v1/remove-background"
    photos = load_photos()
    capacity = closed_loop(url, photos, opts.capacity_clients, opts.capacity_seconds)
    rate = capacity * opts.multiple
    print(
        f"capacity {capacity:.2f} img/s with {opts.capacity_clients} clients; sending {rate:.2f}/s"
    )

    results = Results()
    stop = threading.Event()
    peaks: dict[str, float] = {}
    kills: list[str] = []
    background = [
        threading.Thread(target=sample_rss, args=(peaks, stop), daemon=True),
        threading.Thread(target=kill_loop, args=(app_name, opts.kill_every, stop, kills)),
    ]
    for t in background:
        t.start()
    duration = opts.minutes * 60
    restart = threading.Timer(
        duration / 2, deploy, args=({"load_retry_initial_s": 4.0, "retry_after_s": 3},)
    )
    restart.start()
    started = time.monotonic()
    cycle = itertools.cycle(photos)
    limits = httpx.Limits(max_connections=MAX_WORKERS)
    with httpx.Client(limits=limits) as client, ThreadPoolExecutor(MAX_WORKERS) as pool:
        for i in itertools.count():
            due = started + i / rate
            if due - started >= duration:
                break
            time.sleep(max(0.0, due - time.monotonic()))
            results.sent += 1
            pool.submit(one_request, client, url, next(cycle), results)
    stop.set()
    restart.join()
    for t in background:
        t.join()

    report = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "config": opts.config,
        "replicas_per_group": opts.replicas,
        "minutes": opts.minutes,
        "capacity_img_s": round(capacity, 2),
        "offered_img_s": round(rate, 2),
        **summary(results),
        "kills": kills,
        "rolling_restart_at_s": round(duration / 2),
        "peak_rss_mib": {k.split("::", 1)[1]: round(v) for k, v in sorted(peaks.items())},
    }
    print(json.dumps(report, indent=2))
    if opts.json:
        Path(opts.json).write_text(json.dumps(report, indent=2))
    serve.shutdown()
    ray.shutdown()


def _wait_until_running(app_name: str, deploy: Callable[[dict[str, object]], None]) -> None:
    deploy({})
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        app = serve.status().applications.get(app_name)
        if app is not None and app.status == "RUNNING":
            return
        time.sleep(2)
    raise SystemExit(f"{app_name} did not start within 10 minutes")


if __name__ == "__main__":
    main()
