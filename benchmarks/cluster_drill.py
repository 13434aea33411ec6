"""What every cluster drill does before and after its own part.

Isolate the network, start a `LocalCluster`, `serve deploy` the drill config, measure one
replica's capacity, and at the end write the summary (with the CPU model and the date)
next to the CSV and PNG in docs/cluster/.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import time
from pathlib import Path
from typing import Any

from benchmarks.cluster_app import (
    APP,
    HEAD_RESOURCES,
    WORKER_RESOURCES,
    drill_config,
    scaling,
    u2net_home,
)
from benchmarks.cluster_nodes import LocalCluster, isolate_network
from benchmarks.cluster_watch import Sampler, plot, rss_slopes, write_csv
from benchmarks.loadgen import ROOT, Photo, closed_loop
from models.hardware import cpu_description

OUT_DIR = ROOT / "docs" / "cluster"


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR, help="CSV, PNG and JSON here")
    parser.add_argument("--capacity-clients", type=int, default=2)
    parser.add_argument("--capacity-seconds", type=float, default=20.0)
    parser.add_argument(
        "--shared-network",
        action="store_true",
        help="run in this machine's network namespace if a private one cannot be made "
        "(Ray then listens on every interface)",
    )


def isolate_or_exit(opts: argparse.Namespace) -> None:
    why = isolate_network()
    if why is not None and not opts.shared_network:
        raise SystemExit(f"no private network namespace ({why}); --shared-network to go on")
    if why is not None:
        print(f"warning: shared network namespace ({why})")


def make_cluster(workers: int = 1, **options: Any) -> LocalCluster:
    """A head (the ingress, Serve's controller and proxy) and `workers` model nodes;
    `options` go to `LocalCluster`."""
    resources = [{**WORKER_RESOURCES, f"worker{i + 1}": 1.0} for i in range(workers)]
    return LocalCluster(resources, head_resources=HEAD_RESOURCES, **options)


class App:
    """The drill app on a cluster: deploy (again, with changed args) and wait for it.
    `u2net` and `ingress` are (min, max, target ongoing requests) of each group."""

    def __init__(
        self,
        cluster: LocalCluster,
        u2net: tuple[int, int, float] = (1, 3, 2.0),
        ingress: tuple[int, int, float] = (1, 2, 4.0),
        delays: dict[str, float] | None = None,
        **args: Any,
    ) -> None:
        self.cluster = cluster
        self.home = u2net_home(cluster.root)
        self.u2net = u2net
        self.ingress = ingress
        self.delays = delays or {}
        self.args = args
        self.url = f"{cluster.serve_url}/api/v1/remove-background"

    def config(self, **changed: Any) -> dict[str, Any]:
        return drill_config(
            self.home,
            self.cluster.serve_port,
            u2net_scaling=scaling(*self.u2net, **self.delays),
            ingress_scaling=scaling(*self.ingress, **self.delays),
            **{**self.args, **changed},
        )

    def deploy(self, timeout_s: float = 300, **changed: Any) -> float:
        """`serve deploy`; returns seconds until it runs again with every group healthy."""
        started_wall, started = time.time(), time.monotonic()
        self.cluster.serve_deploy(self.config(**changed))
        self.cluster.wait_running(APP, timeout_s=timeout_s, since=started_wall - 1)
        return time.monotonic() - started


def capacity(app: App, photos: list[Photo], clients: int, seconds: float) -> float:
    """One U2-Net replica's throughput (img/s) with `clients` back-to-back clients."""
    closed_loop(app.url, photos[:2], 1, min(5.0, seconds))  # warm-up: first batches
    return closed_loop(app.url, photos, clients, seconds)


def write_report(
    name: str,
    out_dir: Path,
    sampler: Sampler,
    title: str,
    figures: dict[str, Any],
) -> dict[str, Any]:
    """The end every drill shares: its samples as `<name>.csv`, the plot of them as
    `<name>.png`, and its figures with each Serve process's RSS slope (unless ``figures``
    has its own ``rss``), the machine and the date as `<name>.json`."""
    write_csv(sampler.rows, out_dir / f"{name}.csv")
    plot(sampler.rows, sampler.marks, title, out_dir / f"{name}.png")
    return write_summary(
        name, out_dir, {**figures, "rss": figures.get("rss") or rss_slopes(sampler.rss)}
    )


def write_summary(name: str, out_dir: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """Prints the summary with the machine and date, and writes it as JSON."""
    full = {
        "drill": name,
        "date": datetime.date.today().isoformat(),
        "cpu": cpu_description(),
        "cores": os.cpu_count(),
        **summary,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(full, indent=2) + "\n")
    print(json.dumps(full, indent=2))
    return full
