"""Node loss under load: kill the worker node that holds U2-Net replicas, watch recovery.

A head (proxy, controller, ingress) and two worker nodes (U2-Net, min 2 replicas) started
with `ray start` on 127.0.0.1 in a network namespace of their own. Under `--multiple` x
one replica's capacity, every process of the worker holding the most U2-Net replicas is
SIGKILLed (a lost VM or pod). Reported: what clients saw (lost = not 2xx and not 429/503
with Retry-After; a hang shows as a client timeout), seconds until health is `healthy`
again and U2-Net runs min_replicas again (on the surviving worker, no redeploy), and
seconds until the killed node, started again, is back in the cluster.

    .venv/bin/python -m benchmarks.cluster_node_loss
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections import Counter
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
from benchmarks.cluster_nodes import LocalCluster, Node
from benchmarks.cluster_watch import Sampler, health_status
from benchmarks.loadgen import Results, load_photos, open_loop, plain, summary
from models.hardware import cpu_description


def busiest_worker(cluster: LocalCluster, group: str = "U2Net") -> tuple[Node, int]:
    """The worker node running the most replicas of `group`, and how many."""
    counts: Counter[str] = Counter(
        r["node_id"]
        for r in cluster.deployments(APP)[group]["replicas"]
        if r["state"] == "RUNNING" and r.get("node_id")
    )
    for node_id, count in counts.most_common():
        node = cluster.node_by_id(node_id)
        if node is not None and node is not cluster.head:
            return node, count
    raise RuntimeError(f"no worker runs a {group} replica: {counts}")


def kill_and_recover(
    app: App, sampler: Sampler, min_replicas: int, timeout_s: float
) -> dict[str, Any]:
    """Kill the busiest worker; seconds until health is healthy and U2-Net runs
    `min_replicas` again, each RUNNING replica on a live node."""
    cluster = app.cluster
    node, held = busiest_worker(cluster)
    killed_at = time.monotonic()
    pids = cluster.kill_node(node)
    sampler.mark(f"kill {node.name}")
    out: dict[str, Any] = {"killed": node.name, "replicas_on_it": held, "pids_killed": len(pids)}
    seen_unhealthy = False
    for _ in range(int(timeout_s)):
        time.sleep(1)
        try:
            deps = cluster.deployments(APP)
            alive = {n["raylet"]["nodeId"] for n in cluster.alive_nodes()}
        except Exception:  # the REST API may stall while the GCS notices the loss
            continue
        replicas = [
            r for r in deps["U2Net"]["replicas"]
            if r["state"] == "RUNNING" and r.get("node_id") in alive
        ]  # fmt: skip
        health = health_status(cluster.serve_url)
        seen_unhealthy |= health != "healthy"
        node_gone = len(alive) == len(cluster.nodes) - 1
        if node_gone and health == "healthy" and len(replicas) >= min_replicas:
            out["recovered_after_s"] = round(time.monotonic() - killed_at, 1)
            break
    out["health_left_healthy"] = seen_unhealthy
    sampler.mark("recovered" if "recovered_after_s" in out else "not recovered")
    return out


def restart_node(cluster: LocalCluster, node: Node, sampler: Sampler) -> float:
    """`ray start` the killed node again; seconds until every node is alive."""
    started = time.monotonic()
    cluster.start_node(node)
    cluster.wait_nodes(len(cluster.nodes))
    sampler.mark(f"{node.name} back")
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    parser.add_argument("--multiple", type=float, default=1.0, help="x one replica's capacity")
    parser.add_argument("--before", type=float, default=20.0, help="load seconds before it")
    parser.add_argument("--after", type=float, default=60.0, help="load seconds after it")
    parser.add_argument("--recover-timeout", type=float, default=120.0)
    opts = parser.parse_args()
    isolate_or_exit(opts)

    with make_cluster(workers=2) as cluster:
        app = App(cluster, u2net=(2, 3, 2.0))
        deploy_s = app.deploy()
        photos = load_photos()
        cap = capacity(app, photos, opts.capacity_clients, opts.capacity_seconds) / 2
        rate = cap * opts.multiple
        print(f"deployed in {deploy_s:.0f} s; {cap:.2f} img/s per replica; offering {rate:.2f}/s")
        results = Results()
        sampler = Sampler(cluster, APP, results).start()
        events: dict[str, Any] = {}

        def fault() -> None:
            events.update(kill_and_recover(app, sampler, 2, opts.recover_timeout))
            node = next(n for n in cluster.workers if n.name == events["killed"])
            events["node_rejoined_after_s"] = round(restart_node(cluster, node, sampler), 1)

        timer = threading.Timer(opts.before, fault)
        timer.start()
        sampler.mark(f"load {rate:.2f}/s")
        open_loop(app.url, plain(photos), lambda t: rate, opts.before + opts.after, results)
        timer.join()
        time.sleep(2 * sampler.interval_s)
        sampler.stop()

    title = f"node loss at {opts.multiple:g}x capacity ({rate:.2f} img/s) on {cpu_description()}"
    write_report(
        "node_loss",
        opts.out_dir,
        sampler,
        title,
        {
            "command": " ".join(["python -m benchmarks.cluster_node_loss", *sys.argv[1:]]),
            "nodes": "head (proxy, controller, ingress) + 2 workers (U2-Net), 127.0.0.1",
            "deploy_s": round(deploy_s, 1),
            "capacity_img_s_per_replica": round(cap, 2),
            "offered_img_s": round(rate, 2),
            **summary(results),
            **events,
        },
    )


if __name__ == "__main__":
    main()
