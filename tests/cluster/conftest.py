"""One short multi-node drill (benchmarks/cluster_ci.py) for every test in this package.

The drill runs in a process of its own, in a network namespace of its own: its Ray
cluster (a head and two workers started by `ray start`, own temp dir, own ports and token)
never meets the Ray cluster that tests/service starts in this pytest process, and nothing
here calls `ray.init`. The tests judge the JSON it writes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.cluster_ci import NO_NAMESPACE

ROOT = Path(__file__).resolve().parents[2]
#: Where a private network namespace cannot be made, run on the machine's network instead.
SHARED_NETWORK = "BG_REMOVAL_CLUSTER_SHARED_NETWORK"
DRILL_TIMEOUT_S = 420


@pytest.fixture(scope="package")
def drill(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("cluster-drill")
    command = [sys.executable, "-m", "benchmarks.cluster_ci", "--json", str(out / "drill.json")]
    command += ["--csv", str(out / "drill.csv")]
    if os.environ.get(SHARED_NETWORK) == "1":
        command.append("--shared-network")
    log = out / "drill.log"
    with log.open("w") as f:
        done = subprocess.run(
            command, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, timeout=DRILL_TIMEOUT_S
        )
    text = log.read_text()
    if done.returncode == NO_NAMESPACE:
        pytest.skip(f"{text.strip()}; set {SHARED_NETWORK}=1 to run on the machine's network")
    assert done.returncode == 0, f"the drill failed (log {log}):\n{text[-6000:]}"
    return json.loads((out / "drill.json").read_text())
