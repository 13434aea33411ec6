"""GCS restart under load, with GCS fault tolerance backed by Redis.

Debian's `redis-server` started here on 127.0.0.1 (a free port, a password, no persistence,
its own temp dir), a head started with `RAY_REDIS_ADDRESS`, `--redis-password` and an
external storage namespace of its own (Ray's documented `ray start` setup for GCS fault
tolerance), one worker with the U2-Net replicas, all in a network namespace of their own.
Under `--multiple` x one replica's capacity the head's `gcs_server` is SIGKILLed and, after
`--outage` seconds, started again with the command line and environment it had (what a
restarted head does; raylets wait up to 60 s for it). Reported: what clients saw, seconds
until health is healthy again after the restart, and whether every replica survived (same
pids: recovered from Redis, not restarted).

    .venv/bin/python -m benchmarks.cluster_gcs_restart
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
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
from benchmarks.cluster_nodes import HOST, LocalCluster, free_port
from benchmarks.cluster_watch import Sampler, health_status
from benchmarks.loadgen import Results, load_photos, open_loop, plain, summary
from models.hardware import cpu_description

REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"


@contextlib.contextmanager
def redis_server(root: Path) -> Iterator[tuple[str, str]]:
    """A throw-away Redis on 127.0.0.1: (address, password); stopped by its pid."""
    if not Path(REDIS).exists():
        raise SystemExit("redis-server missing: apt-get install -y redis-server")
    port = free_port(set())
    password = secrets.token_hex(16)
    data = root / "redis"
    data.mkdir(parents=True, exist_ok=True)
    (data / "redis.conf").write_text(
        f"bind {HOST}\nport {port}\nrequirepass {password}\ndir {data}\n"
        'save ""\nappendonly no\ndaemonize no\nprotected-mode yes\n'
    )
    log = (data / "redis.log").open("ab")
    process = subprocess.Popen([REDIS, str(data / "redis.conf")], stdout=log, stderr=log)
    try:
        for _ in range(50):
            ping = subprocess.run(
                ["redis-cli", "-h", HOST, "-p", str(port), "--no-auth-warning", "-a", password,
                 "ping"],
                capture_output=True, text=True,
            )  # fmt: skip
            if ping.stdout.strip() == "PONG":
                break
            time.sleep(0.2)
        yield f"{HOST}:{port}", password
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
        if process.poll() is None:
            process.kill()


def restart_gcs(cluster: LocalCluster, outage_s: float) -> dict[str, Any]:
    """SIGKILL the head's gcs_server, wait `outage_s`, start it again as it was started."""
    pid = cluster.head.pid_of("gcs_server")
    if pid is None:
        raise RuntimeError("no gcs_server on the head")
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    env_items = Path(f"/proc/{pid}/environ").read_bytes().rstrip(b"\0").split(b"\0")
    env = dict(item.decode().split("=", 1) for item in env_items if b"=" in item)
    cwd = os.readlink(f"/proc/{pid}/cwd")
    os.kill(pid, signal.SIGKILL)
    time.sleep(outage_s)
    log = (cluster.root / "gcs_server.restart.log").open("ab")
    new = subprocess.Popen(
        [a.decode() for a in argv], env=env, cwd=cwd, stdout=log, stderr=log,
        start_new_session=True,
    )  # fmt: skip
    return {"gcs_pid_killed": pid, "gcs_pid_new": new.pid}


def replica_pids(cluster: LocalCluster) -> dict[str, int]:
    return {
        r["replica_id"]: r["pid"]
        for dep in cluster.deployments(APP).values()
        for r in dep["replicas"]
        if r["state"] == "RUNNING"
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    parser.add_argument("--multiple", type=float, default=1.0, help="x one replica's capacity")
    parser.add_argument("--before", type=float, default=15.0, help="load seconds before it")
    parser.add_argument("--after", type=float, default=60.0, help="load seconds after it")
    parser.add_argument("--outage", type=float, default=5.0, help="seconds without a GCS")
    opts = parser.parse_args()
    isolate_or_exit(opts)

    namespace = f"bg-removal-drill-{secrets.token_hex(4)}"
    with contextlib.ExitStack() as stack:
        redis_root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rcl-redis-")))
        address, password = stack.enter_context(redis_server(redis_root))
        cluster = make_cluster(
            workers=1,
            head_env={"RAY_REDIS_ADDRESS": address, "RAY_external_storage_namespace": namespace},
            head_args=[f"--redis-password={password}"],
        )
        stack.enter_context(cluster)
        app = App(cluster, u2net=(1, 1, 2.0), ingress=(1, 1, 4.0))
        deploy_s = app.deploy()
        photos = load_photos()
        rate = capacity(app, photos, opts.capacity_clients, opts.capacity_seconds) * opts.multiple
        print(f"deployed in {deploy_s:.0f} s; offering {rate:.2f} img/s; GCS in Redis {address}")
        before = replica_pids(cluster)
        results = Results()
        sampler = Sampler(cluster, APP, results).start()
        events: dict[str, Any] = {}

        def fault() -> None:
            sampler.mark("kill gcs")
            events.update(restart_gcs(cluster, opts.outage))
            restarted = time.monotonic()
            sampler.mark("gcs restarted")
            for _ in range(120):
                with contextlib.suppress(Exception):
                    if health_status(cluster.serve_url) == "healthy" and replica_pids(cluster):
                        events["healthy_after_restart_s"] = round(time.monotonic() - restarted, 1)
                        break
                time.sleep(1)

        timer = threading.Timer(opts.before, fault)
        timer.start()
        sampler.mark(f"load {rate:.2f}/s")
        open_loop(app.url, plain(photos), lambda t: rate, opts.before + opts.after, results)
        timer.join()
        after = replica_pids(cluster)
        time.sleep(2 * sampler.interval_s)
        sampler.stop()
        alive_nodes = len(cluster.alive_nodes())

    title = f"GCS killed, restarted after {opts.outage:g} s, Redis-backed, on {cpu_description()}"
    write_report(
        "gcs_restart",
        opts.out_dir,
        sampler,
        title,
        {
            "command": " ".join(["python -m benchmarks.cluster_gcs_restart", *sys.argv[1:]]),
            "nodes": "head (GCS in Redis, proxy, controller, ingress) + 1 worker (U2-Net)",
            "redis": subprocess.run(
                [REDIS, "--version"], capture_output=True, text=True
            ).stdout.strip(),
            "offered_img_s": round(rate, 2),
            "outage_s": opts.outage,
            **summary(results),
            **events,
            "replicas_kept_their_pids": before == after,
            "replicas_before": before,
            "replicas_after": after,
            "alive_nodes_at_end": alive_nodes,
        },
    )


if __name__ == "__main__":
    main()
