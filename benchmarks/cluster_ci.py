"""The short cluster drill CI runs: autoscaling, a rollout and a node loss, on one cluster.

What `cluster_autoscale --rollout` and `cluster_node_loss` do, made short enough for every
CI run (about 2 minutes on 2 cores) by sharing one cluster: a head and two workers, U2-Net
autoscaling 1..3. Load at 2x one replica's capacity with a `serve deploy` of changed
`args` half-way; idle until every group is back at min_replicas; then load at 1x while the
worker holding the U2-Net replica is SIGKILLed, until the service is healthy again on the
other worker. RSS of every Serve process is sampled throughout. Writes one JSON for
tests/cluster to judge; run in a process (and network namespace) of its own so that the
test session's own Ray cluster is never touched.

    .venv/bin/python -m benchmarks.cluster_ci --json /tmp/cluster-ci.json
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.cluster_app import APP
from benchmarks.cluster_autoscale import scaling_figures, stepped_load, wait_back_to_min
from benchmarks.cluster_drill import App, capacity, make_cluster
from benchmarks.cluster_node_loss import kill_and_recover
from benchmarks.cluster_nodes import isolate_network
from benchmarks.cluster_watch import Sampler, rss_slopes, write_csv
from benchmarks.loadgen import Results, load_photos, open_loop, plain, summary
from models.hardware import cpu_description

#: Exit status when no private network namespace can be made (the test skips).
NO_NAMESPACE = 77
LOAD_S = 20.0
ROLLOUT_AT_S = 8.0
NODE_LOSS_LOAD_S = 12.0
KILL_AT_S = 3.0
#: Processes with fewer RSS samples (after the skip) are left out of the trends.
RSS_MIN_SAMPLES = 10


def run(opts: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"cpu": cpu_description()}
    started = time.monotonic()
    with make_cluster(workers=2) as cluster:
        app = App(cluster, u2net=(1, 3, 2.0), ingress=(1, 2, 4.0), delays={"downscale_delay_s": 8})
        out["cluster_start_s"] = round(time.monotonic() - started, 1)
        out["deploy_s"] = round(app.deploy(), 1)
        photos = load_photos()
        cap = capacity(app, photos, 2, opts.capacity_seconds)
        out["capacity_img_s"] = round(cap, 2)
        wait_back_to_min(app, 20)

        scale = Results()
        sampler = Sampler(cluster, APP, scale, 2.0, max_s=600, metrics=False).start()
        events = stepped_load(app, sampler, scale, 2 * cap, 0.0, LOAD_S, ROLLOUT_AT_S)
        back = wait_back_to_min(app, 60)
        time.sleep(2 * sampler.interval_s)  # rows at min_replicas before the next phase
        out["scale"] = {
            **summary(scale),
            **events,
            "all_back_to_min_s": None if back is None else round(back, 1),
        }
        out["rollout"] = summary_between(scale, sampler, "rollout", "rolled")

        loss = Results()
        sampler.results = loss  # the sampler's client figures follow the phase
        fault: dict[str, Any] = {}
        kill = threading.Timer(
            KILL_AT_S, lambda: fault.update(kill_and_recover(app, sampler, 1, 60))
        )
        kill.start()
        open_loop(app.url, plain(photos), lambda t: cap, NODE_LOSS_LOAD_S, loss)
        kill.join()
        out["node_loss"] = {**summary(loss), **fault, "offered_img_s": round(cap, 2)}
        time.sleep(sampler.interval_s)
        sampler.stop()
        # the scale phase's figures from its rows: up during the load, down before the loss
        kill_at = next(at for at, label in sampler.marks if label.startswith("kill"))
        rows = [r for r in sampler.rows if r["t_s"] < kill_at]
        out["scale"]["groups"] = scaling_figures(rows, 0.0, LOAD_S)
        out["rss"] = rss_slopes(sampler.rss, skip_s=opts.rss_skip_s, min_samples=RSS_MIN_SAMPLES)
        out["rss_samples"] = dict(sampler.rss)
        out["total_s"] = round(time.monotonic() - started, 1)
    if opts.csv:
        write_csv(sampler.rows, opts.csv)
    return out


def summary_between(
    results: Results, sampler: Sampler, first: str, last: str
) -> dict[str, Any] | None:
    """Client outcomes between two marks (e.g. the rollout's start and its end)."""
    marks = {label: at for at, label in sampler.marks}
    if first not in marks or last not in marks:
        return None
    start, end = sampler.started + marks[first], sampler.started + marks[last]
    events = results.since(start, end + 1)
    return {
        "seconds": round(end - start, 1),
        "answers": len(events),
        "lost": sum(e.lost for e in events),
        "ok": sum(e.outcome == "200" for e in events),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--csv", type=Path)
    parser.add_argument("--capacity-seconds", type=float, default=5.0)
    parser.add_argument("--rss-skip-s", type=float, default=20.0)
    parser.add_argument("--shared-network", action="store_true")
    opts = parser.parse_args()
    why = isolate_network()
    if why is not None and not opts.shared_network:
        print(f"no private network namespace: {why}")
        raise SystemExit(NO_NAMESPACE)
    result = run(opts)
    opts.json.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "rss_samples"}, indent=2))


if __name__ == "__main__":
    main()
