"""A real multi-node Ray cluster on one machine, for the cluster drills and their CI tests.

A head and worker nodes, each started by `ray start` in its own process tree, own temp dir
and own ports, all on 127.0.0.1, so that a node can be killed by its pids (as a lost VM or
pod would be) and started again, while other Ray clusters on the machine (other test
sessions, CI) are never touched: nothing here calls `ray.init`, `ray stop` or reads the
machine's default Ray address. The app is deployed with `serve deploy` and observed through
the dashboard's REST API (what `serve status` reads) and the nodes' Prometheus ports.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
#: Seconds one `ray start` may take on a loaded 2-core machine.
START_TIMEOUT_S = 120.0


#: unshare(2) flag (linux/sched.h).
CLONE_NEWNET = 0x40000000
#: Set in a drill re-executed by `unshare --map-root-user --net`: its namespace is made.
NETNS_ENV = "BG_REMOVAL_CLUSTER_NETNS"


def isolate_network() -> str | None:
    """Move this process (and all it starts later) into a network namespace of its own
    with only a loopback interface; None when done, else why it could not be done.

    Ray's servers (GCS, raylets, agents) listen on every interface whatever
    `--node-ip-address` says; in a namespace with only `lo`, "every interface" is
    127.0.0.1 and nothing outside this process tree can reach them. Call it first thing in
    `main`, before any thread of this process is started (the namespace is the calling
    thread's, and the threads it starts later). Root unshares the network namespace;
    others, where the kernel allows user namespaces, are re-executed under `unshare
    --map-root-user --net` (a user namespace needs a process without threads, and
    importing Ray starts some).
    """
    if os.environ.get(NETNS_ENV) != "1":
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(CLONE_NEWNET) != 0:
            why = f"unshare: {os.strerror(ctypes.get_errno())}"
            tool = shutil.which("unshare")
            probe = [tool, "--map-root-user", "--net", "true"] if tool else None
            if probe is None or subprocess.run(probe, capture_output=True).returncode != 0:
                return why
            argv = [tool, "--map-root-user", "--net", "--", *sys.orig_argv]
            os.execve(tool, argv, {**os.environ, NETNS_ENV: "1"})
    done = subprocess.run(["ip", "link", "set", "lo", "up"], capture_output=True, text=True)
    if done.returncode != 0:
        return f"ip link set lo up: {done.stderr.strip()}"
    return None


def free_port(taken: set[int]) -> int:
    """A port free on 127.0.0.1 now and not handed out before by this cluster."""
    for _ in range(100):
        with socket.socket() as sock:
            sock.bind((HOST, 0))
            port = int(sock.getsockname()[1])
        if port not in taken:
            taken.add(port)
            return port
    raise RuntimeError("no free port found in 100 tries")


def _children() -> dict[int, list[int]]:
    """Parent pid -> child pids of every process, from /proc."""
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _cmdline(pid: int) -> str:
    try:
        return (Path(f"/proc/{pid}/cmdline").read_bytes()).replace(b"\0", b" ").decode()
    except OSError:
        return ""


@dataclass
class Node:
    """One `ray start` node: its arguments (to start it again) and where it keeps its files."""

    name: str
    temp_dir: Path
    args: list[str]
    metrics_port: int
    env: dict[str, str] = field(default_factory=dict)

    def pids(self) -> list[int]:
        """Every process of this node: those naming its temp dir, and all their descendants
        (the raylet's workers rename themselves `ray::...`)."""
        markers = (f"{self.temp_dir}/", f"{self.temp_dir} ")
        roots = [
            int(p.name)
            for p in Path("/proc").iterdir()
            if p.name.isdigit() and any(m in _cmdline(int(p.name)) + " " for m in markers)
        ]
        tree = _children()
        seen: set[int] = set()
        stack = [pid for pid in roots if pid != os.getpid()]
        while stack and len(seen) < 10_000:
            pid = stack.pop()
            if pid not in seen:
                seen.add(pid)
                stack.extend(tree.get(pid, []))
        return sorted(seen)

    def pid_of(self, executable: str) -> int | None:
        """The pid of one of the node's system processes, e.g. `gcs_server` or `raylet`."""
        for pid in self.pids():
            argv0 = _cmdline(pid).split(" ", 1)[0]
            if argv0.endswith(f"/{executable}"):
                return pid
        return None


class LocalCluster:
    """Head plus workers on 127.0.0.1, with token auth of its own and a Serve app on top.

    `worker_resources` gives each worker's custom resources (a Serve config places replicas
    with them); `env` goes to every node, `head_env` and `head_args` to the head only (e.g.
    `RAY_REDIS_ADDRESS` and `--redis-password` for GCS fault tolerance).
    """

    def __init__(
        self,
        worker_resources: list[dict[str, float]],
        *,
        head_cpus: float = 1,
        worker_cpus: float = 2,
        head_resources: dict[str, float] | None = None,
        env: dict[str, str] | None = None,
        head_env: dict[str, str] | None = None,
        head_args: list[str] | None = None,
        object_store_mib: int = 128,
    ) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="rcl-", dir="/tmp"))  # short: socket paths
        self.token = secrets.token_hex(32)
        self._ports: set[int] = set()
        self.gcs_port = free_port(self._ports)
        self.dashboard_port = free_port(self._ports)
        self.serve_port = free_port(self._ports)
        self.env = {
            **os.environ,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": self.token,
            "RAY_USAGE_STATS_ENABLED": "0",
            # these processes must never find another cluster on the machine
            "RAY_ADDRESS": f"{HOST}:{self.gcs_port}",
            **(env or {}),
        }
        self._object_store = str(object_store_mib * 2**20)
        self.head = self._node(
            "head",
            head_cpus,
            head_resources or {},
            [
                "--head",
                f"--port={self.gcs_port}",
                "--include-dashboard=true",
                f"--dashboard-host={HOST}",
                f"--dashboard-port={self.dashboard_port}",
                f"--ray-client-server-port={free_port(self._ports)}",
                *(head_args or []),
            ],
        )
        self.head.env = dict(head_env or {})
        self.workers = [
            self._node(f"worker{i + 1}", worker_cpus, res, [f"--address={self.gcs_address}"])
            for i, res in enumerate(worker_resources)
        ]
        self._started = False
        self._system_pids: dict[str, int] = {}
        atexit.register(self.stop)

    @property
    def gcs_address(self) -> str:
        return f"{HOST}:{self.gcs_port}"

    @property
    def dashboard(self) -> str:
        return f"http://{HOST}:{self.dashboard_port}"

    @property
    def serve_url(self) -> str:
        return f"http://{HOST}:{self.serve_port}"

    @property
    def nodes(self) -> list[Node]:
        return [self.head, *self.workers]

    def _node(self, name: str, cpus: float, resources: dict[str, float], extra: list[str]) -> Node:
        temp_dir = self.root / name
        metrics_port = free_port(self._ports)
        args = [
            f"--node-ip-address={HOST}",
            f"--temp-dir={temp_dir}",
            f"--num-cpus={cpus:g}",
            f"--resources={json.dumps(resources)}",
            f"--object-store-memory={self._object_store}",
            f"--node-manager-port={free_port(self._ports)}",
            f"--object-manager-port={free_port(self._ports)}",
            f"--metrics-export-port={metrics_port}",
            f"--dashboard-agent-listen-port={free_port(self._ports)}",
            f"--dashboard-agent-grpc-port={free_port(self._ports)}",
            f"--runtime-env-agent-port={free_port(self._ports)}",
            "--disable-usage-stats",
            *extra,
        ]
        return Node(name, temp_dir, args, metrics_port)

    # --- life cycle -----------------------------------------------------------------

    def start(self) -> LocalCluster:
        """Start the head, then the workers side by side; wait until every node is alive."""
        self._started = True
        self.start_node(self.head)
        with ThreadPoolExecutor(max(1, len(self.workers))) as pool:
            list(pool.map(self.start_node, self.workers))  # raises what a start raised
        self.wait_nodes(len(self.nodes))
        return self

    def start_node(self, node: Node) -> None:
        """`ray start` for one node (again, after `kill_node`: a new node id, same ports)."""
        node.temp_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.root / f"{node.name}.start.log"
        env = {**self.env, **node.env}
        with log_path.open("ab") as log:
            done = subprocess.run(
                [str(VENV_BIN / "ray"), "start", *node.args],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=START_TIMEOUT_S,
                cwd=ROOT,
            )
        if done.returncode != 0:  # its log goes with the cluster's temp dir: say it now
            tail = log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"`ray start` of {node.name} exited {done.returncode}:\n{tail}")

    def kill_node(self, node: Node, sig: int = signal.SIGKILL) -> list[int]:
        """Kill every process of one node, as a lost machine would; returns the pids."""
        pids = node.pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        return pids

    def stop(self) -> None:
        """Kill every node's processes (SIGTERM, then SIGKILL) and remove the temp dirs."""
        if not self._started:
            return
        self._started = False
        for node in reversed(self.nodes):
            self.kill_node(node, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(n.pids() for n in self.nodes):
            time.sleep(0.5)
        for node in self.nodes:
            self.kill_node(node, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the cluster's REST API ---------------------------------------------------------

    def api(self, path: str, method: str = "GET", **kwargs: Any) -> httpx.Response:
        """A request to this cluster's dashboard, with its token."""
        headers = {"Authorization": f"Bearer {self.token}"}
        return httpx.request(
            method, f"{self.dashboard}{path}", headers=headers, timeout=30, **kwargs
        )

    def alive_nodes(self) -> list[dict[str, Any]]:
        response = self.api("/nodes?view=summary")
        response.raise_for_status()
        nodes = response.json()["data"]["summary"]
        return [n for n in nodes if n["raylet"]["state"] == "ALIVE"]

    def node_by_id(self, node_id: str) -> Node | None:
        """Which of this cluster's nodes has Ray node id `node_id` (by its raylet's port)."""
        for info in self.alive_nodes():
            raylet = info["raylet"]
            if raylet.get("nodeId") == node_id:
                port = f"--node-manager-port={raylet.get('nodeManagerPort')}"
                return next((n for n in self.nodes if port in n.args), None)
        return None

    def wait_nodes(self, count: int, timeout_s: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        last: object = None
        while time.monotonic() < deadline:
            try:
                last = len(self.alive_nodes())
                if last == count:
                    return
            except (httpx.HTTPError, KeyError, ValueError) as exc:
                last = exc
            time.sleep(1)
        raise TimeoutError(f"{count} nodes not alive within {timeout_s} s (last: {last!r})")

    def serve_deploy(self, config: dict[str, Any]) -> None:
        """`serve deploy` of a config (a dict, written to a file), as an operator runs it."""
        path = self.root / f"serve-{time.time_ns()}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        subprocess.run(
            [str(VENV_BIN / "serve"), "deploy", str(path), "--address", self.dashboard],
            env=self.env,
            check=True,
            capture_output=True,
            timeout=120,
            cwd=ROOT,
        )

    def serve_details(self) -> dict[str, Any]:
        """Serve's state as `serve status` reads it: apps, deployments, replicas, proxies."""
        response = self.api("/api/serve/applications/")
        response.raise_for_status()
        return response.json()

    def deployments(self, app: str) -> dict[str, dict[str, Any]]:
        details = self.serve_details().get("applications", {}).get(app)
        return {} if details is None else details["deployments"]

    def app_status(self, app: str) -> str | None:
        details = self.serve_details().get("applications", {}).get(app)
        return None if details is None else details["status"]

    def wait_running(self, app: str, timeout_s: float = 300, since: float = 0.0) -> None:
        """Until `app` is RUNNING with every deployment HEALTHY (deployed after `since`)."""
        deadline = time.monotonic() + timeout_s
        last: object = None
        while time.monotonic() < deadline:
            try:
                details = self.serve_details().get("applications", {}).get(app)
            except httpx.HTTPError as exc:
                details, last = None, exc
            if details is not None:
                last = details["status"]
                if details["status"] == "DEPLOY_FAILED":
                    raise RuntimeError(f"deploying {app} failed: {details['message']}")
                fresh = details.get("last_deployed_time_s", 0) > since
                healthy = all(d["status"] == "HEALTHY" for d in details["deployments"].values())
                if fresh and details["status"] == "RUNNING" and healthy:
                    return
            time.sleep(1)
        raise TimeoutError(f"{app} not running within {timeout_s} s (last: {last!r})")

    def serve_pids(self) -> dict[str, int]:
        """Pid of each Serve process: every running replica (`Deployment#id`), the
        controller and each node's proxy (`proxy@node`), for RSS sampling."""
        alive = all(Path(f"/proc/{pid}").exists() for pid in self._system_pids.values())
        if not self._system_pids or not alive:  # scanning /proc costs: only when they change
            self._system_pids = {}
            for node in self.nodes:
                for pid in node.pids():
                    title = _cmdline(pid)
                    if title.startswith("ray::ServeController"):
                        self._system_pids["controller"] = pid
                    elif title.startswith("ray::ProxyActor"):
                        self._system_pids[f"proxy@{node.name}"] = pid
        pids = dict(self._system_pids)
        for app in (self.serve_details().get("applications") or {}).values():
            for name, dep in app["deployments"].items():
                for replica in dep["replicas"]:
                    if replica.get("pid") and replica["state"] == "RUNNING":
                        pids[f"{name}#{replica['replica_id']}"] = replica["pid"]
        return pids

    def metrics(self) -> dict[str, float]:
        """Serve's queue figures summed over the nodes' Prometheus ports, by deployment:
        `queued:<d>` (waiting in handles), `ongoing:<d>` (total the autoscaler sees)."""
        out: dict[str, float] = {}
        wanted = {
            "ray_serve_deployment_queued_queries": "queued",
            "ray_serve_autoscaling_total_requests": "ongoing",
        }
        for node in self.nodes:
            try:
                text = httpx.get(f"http://{HOST}:{node.metrics_port}/metrics", timeout=5).text
            except httpx.HTTPError:
                continue
            for line in text.splitlines():
                match = _METRIC.match(line)
                if not match or match["name"] not in wanted:
                    continue
                deployment = _LABEL_DEPLOYMENT.search(match["labels"] or "")
                if deployment:
                    key = f"{wanted[match['name']]}:{deployment[1]}"
                    out[key] = out.get(key, 0.0) + float(match["value"])
        return out


_METRIC = re.compile(r"^(?P<name>[a-zA-Z_:][\w:]*)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)")
_LABEL_DEPLOYMENT = re.compile(r'\bdeployment="([^"]*)"')
