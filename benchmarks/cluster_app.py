"""The Serve config of the cluster drills, derived from configs/u2net-cpu.yaml.

The production config, made small enough that several replicas fit a 2-core machine
(u2netp, 0.25 CPU and one thread per replica, runtime pinned so that a replica starts
without timing runtimes) and placed with custom resources: the ingress on the head
(`ingress_host`), U2-Net replicas on the workers (`models`), so that losing a worker
loses model replicas but not the proxy or the ingress. Autoscaling delays are shortened so
that a drill of minutes shows a whole scale-up and scale-down.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import yaml

from deployments.app import ingress_memory_bytes
from deployments.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[1]
BASE_CONFIG = ROOT / "configs" / "u2net-cpu.yaml"
U2NETP = ROOT.parent / "shared" / "models" / "u2netp.onnx"
APP = "bg-removal"
#: Custom resources: what the head and each worker node offer, what each replica takes.
HEAD_RESOURCES = {"ingress_host": 100.0}
WORKER_RESOURCES = {"models": 100.0}
REPLICA_CPUS = 0.25

#: Scale up after 3 s over target, down after 15 s under it, judged over 5 s of metrics.
FAST_SCALING = {
    "upscale_delay_s": 3,
    "downscale_delay_s": 15,
    "look_back_period_s": 5,
    "metrics_interval_s": 1,
}


def u2net_home(root: Path) -> Path:
    """A U2NET_HOME holding the shared u2netp weights (no download in a drill)."""
    home = root / "u2net-home"
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "u2netp.onnx").exists():
        shutil.copy(U2NETP, home / "u2netp.onnx")
    return home


def drill_config(
    home: Path,
    port: int,
    *,
    u2net_scaling: dict[str, Any],
    ingress_scaling: dict[str, Any],
    **args: Any,
) -> dict[str, Any]:
    """configs/u2net-cpu.yaml on 127.0.0.1:`port`, small replicas, placed by resources;
    `args` override the app's args (a changed value restarts the replicas it reaches)."""
    config = copy.deepcopy(yaml.safe_load(BASE_CONFIG.read_text()))
    config["proxy_location"] = "HeadOnly"
    config["http_options"] = {**config.get("http_options", {}), "host": "127.0.0.1", "port": port}
    config["logging_config"] = {**config.get("logging_config", {}), "log_level": "WARNING"}
    [app] = config["applications"]
    app["args"] = {
        **app["args"],
        "u2net_model": "u2netp",
        "u2net_home": str(home),
        "u2net_allow_download": False,
        "u2net_runtime": "onnxruntime",
        "u2net_precision": "f32",
        "u2net_threads": 1,
        "u2net_num_cpus": REPLICA_CPUS,
        "u2net_timeout_s": 30,
        "u2net_autoscaling": u2net_scaling,
        "ingress_num_cpus": REPLICA_CPUS,
        "ingress_autoscaling": ingress_scaling,
        "status_poll_interval_s": 1.0,
        "health_details": True,
        # several ingress replicas on one small head: each reserves memory for its budget
        "max_pixels": 20_000_000,
        "max_output_pixels": 20_000_000,
        "ingress_pixel_budget": 40_000_000,
        **args,
    }
    settings = ServiceSettings(**app["args"])
    overrides = {d["name"]: d for d in app.get("deployments", [])}
    overrides.setdefault("U2Net", {"name": "U2Net"})["ray_actor_options"] = {
        "num_cpus": REPLICA_CPUS,
        "resources": {"models": 1},
    }
    overrides["Ingress"] = {
        "name": "Ingress",
        "ray_actor_options": {
            "num_cpus": REPLICA_CPUS,
            "memory": ingress_memory_bytes(settings),
            "resources": {"ingress_host": 1},
        },
    }
    app["deployments"] = list(overrides.values())
    return config


def scaling(min_replicas: int, max_replicas: int, target: float, **delays: float) -> dict[str, Any]:
    """An autoscaling_config with the drills' short delays (`delays` override them)."""
    return {
        "min_replicas": min_replicas,
        "max_replicas": max_replicas,
        "target_ongoing_requests": target,
        **FAST_SCALING,
        **delays,
    }
