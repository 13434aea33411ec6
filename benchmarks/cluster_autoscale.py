"""Autoscaling under a load step on a multi-node cluster (and, with --rollout, a rollout).

A head (proxy, controller, ingress) and a worker node (U2-Net replicas) started with
`ray start` on 127.0.0.1 in a network namespace of their own; the app from
configs/u2net-cpu.yaml with u2netp and 0.25 CPU per replica, autoscaling U2-Net 1..3 and
the ingress 1..2 with short delays. One replica's capacity is measured, then: idle,
`--multiple` x that capacity open-loop, idle until every group is back at min_replicas.
With `--rollout`, a `serve deploy` with changed `args` (a rolling restart of every
replica) lands half-way through the load. Writes docs/cluster/<name>.{csv,png,json}.

    .venv/bin/python -m benchmarks.cluster_autoscale
    .venv/bin/python -m benchmarks.cluster_autoscale --rollout

Lost = not 2xx and not 429/503 with Retry-After (timeouts and connection errors included).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from typing import Any

from benchmarks.cluster_app import APP
from benchmarks.cluster_drill import (
    App,
    add_common_args,
    capacity,
    isolate_or_exit,
    make_cluster,
    write_report,
)
from benchmarks.cluster_watch import GROUPS, Sampler
from benchmarks.loadgen import Results, load_photos, open_loop, plain, summary
from models.hardware import cpu_description


def stepped_load(
    app: App,
    sampler: Sampler,
    results: Results,
    rate: float,
    idle_s: float,
    load_s: float,
    rollout_at_s: float | None,
) -> dict[str, Any]:
    """Idle, `rate` img/s for `load_s`, then stop; a rollout at `rollout_at_s` into the
    load, once both groups run more than one replica (at most 20 s later). Returns when
    every answer is in."""
    events: dict[str, Any] = {}

    def step(t: float) -> float:
        return rate if idle_s <= t < idle_s + load_s else 0.0

    def rollout() -> None:
        # a rollout of a scaled-up service: wait (bounded) for both groups' new replicas
        for _ in range(20):
            deps = app.cluster.deployments(APP)
            if all(sum(r["state"] == "RUNNING" for r in deps[g]["replicas"]) > 1 for g in GROUPS):
                break
            time.sleep(1)
        sampler.mark("rollout")
        events["rollout_s"] = round(app.deploy(retry_after_s=3), 1)
        sampler.mark("rolled")

    timer = None
    if rollout_at_s is not None:
        timer = threading.Timer(idle_s + rollout_at_s, rollout)
        timer.start()
    sampler.mark("idle")
    threading.Timer(idle_s, sampler.mark, args=(f"load {rate:.2f}/s",)).start()
    threading.Timer(idle_s + load_s, sampler.mark, args=("idle",)).start()
    open_loop(app.url, plain(load_photos()), step, idle_s + load_s, results)
    if timer is not None:
        timer.join()
    return events


def wait_back_to_min(app: App, timeout_s: float) -> float | None:
    """Seconds until every group runs min_replicas again, None if not within `timeout_s`."""
    started = time.monotonic()
    mins = {"U2Net": app.u2net[0], "Ingress": app.ingress[0]}
    while time.monotonic() - started < timeout_s:
        deps = app.cluster.deployments(APP)
        running = {g: sum(r["state"] == "RUNNING" for r in deps[g]["replicas"]) for g in mins}
        if all(running[g] == mins[g] and deps[g]["target_num_replicas"] == mins[g] for g in mins):
            return time.monotonic() - started
        time.sleep(1)
    return None


def scaling_figures(
    rows: list[dict[str, Any]], load_from: float, load_to: float
) -> dict[str, dict[str, Any]]:
    """Per group: peak running replicas from the load's start on (a backlog keeps them up
    after it), seconds from its start to the first scale-up decision (target above min),
    seconds from its end to the return to min."""
    out: dict[str, Any] = {}
    for g in GROUPS:
        listed = [r for r in rows if r[f"{g}_replicas"] != ""]
        base = listed[0][f"{g}_replicas"] if listed else 0
        during = [r for r in listed if load_from <= r["t_s"]]
        up = next((r["t_s"] for r in during if r[f"{g}_target"] > base), None)
        down = next(
            (r["t_s"] for r in listed if r["t_s"] > load_to and r[f"{g}_replicas"] <= base), None
        )
        out[g] = {
            "min": base,
            "peak_replicas": max((r[f"{g}_replicas"] for r in during), default=0),
            "scale_up_after_s": None if up is None else round(up - load_from, 1),
            "back_to_min_after_s": None if down is None else round(down - load_to, 1),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    parser.add_argument("--multiple", type=float, default=2.0, help="x one replica's capacity")
    parser.add_argument("--idle", type=float, default=20.0, help="seconds before the load")
    parser.add_argument("--load", type=float, default=90.0, help="seconds of load")
    parser.add_argument("--settle", type=float, default=120.0, help="most seconds after it")
    parser.add_argument("--rollout", action="store_true", help="serve deploy mid-load")
    parser.add_argument("--name", help="output name (default: autoscale or rollout)")
    opts = parser.parse_args()
    isolate_or_exit(opts)
    name = opts.name or ("rollout" if opts.rollout else "autoscale")

    with make_cluster(workers=1) as cluster:
        app = App(cluster)
        deploy_s = app.deploy()
        photos = load_photos()
        cap = capacity(app, photos, opts.capacity_clients, opts.capacity_seconds)
        rate = cap * opts.multiple
        print(f"deployed in {deploy_s:.0f} s; capacity {cap:.2f} img/s; offering {rate:.2f}/s")
        wait_back_to_min(app, opts.settle)  # the capacity run may have scaled something
        results = Results()
        sampler = Sampler(cluster, APP, results).start()
        events = stepped_load(
            app, sampler, results, rate, opts.idle, opts.load,
            opts.load / 2 if opts.rollout else None,
        )  # fmt: skip
        back = wait_back_to_min(app, opts.settle)
        time.sleep(2 * sampler.interval_s)
        sampler.stop()

    rows = sampler.rows
    title = f"{name}: {opts.multiple:g}x capacity ({cap:.2f} img/s/replica) on {cpu_description()}"
    write_report(
        name,
        opts.out_dir,
        sampler,
        title,
        {
            "command": " ".join(["python -m benchmarks.cluster_autoscale", *sys.argv[1:]]),
            "nodes": "head (proxy, controller, ingress) + 1 worker (U2-Net), 127.0.0.1",
            "deploy_s": round(deploy_s, 1),
            "capacity_img_s": round(cap, 2),
            "offered_img_s": round(rate, 2),
            "idle_s": opts.idle,
            "load_s": opts.load,
            **summary(results),
            **events,
            "scaling": scaling_figures(rows, opts.idle, opts.idle + opts.load),
            "all_back_to_min_s": None if back is None else round(back, 1),
        },
    )


if __name__ == "__main__":
    main()
