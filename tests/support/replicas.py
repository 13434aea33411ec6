"""Find and kill Serve replica actors, as a node failure or an OOM kill would."""

from __future__ import annotations

import ray


def replica_actor_names(app: str, deployment: str) -> list[str]:
    """Names of the live replica actors of one deployment of one app."""
    from ray.util.state import list_actors

    prefix = f"SERVE_REPLICA::{app}#{deployment}#"
    # This test session's own cluster, never one another process started on the machine.
    address = ray.get_runtime_context().gcs_address
    actors = list_actors(address=address, filters=[("state", "=", "ALIVE")], limit=1000)
    names = [a.name for a in actors if a.name and a.name.startswith(prefix)]
    assert names, f"no live replica actor named {prefix}*"
    return sorted(names)


def kill_replica(name: str) -> None:
    """SIGKILL-equivalent: the actor dies with whatever it holds; Serve starts a new one."""
    ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)
