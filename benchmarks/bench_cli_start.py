#!/usr/bin/env python
"""Start-up of the command line: ``bgremove --help``, and ``bgremove i`` on one photo against
rembg's one-shot Python call on the same photo, same u2net file, same machine, same run.

A one-image command is mostly start-up: imports, model load, runtime choice. The targets
(issue 20): ``bgremove --help`` within 0.3 s, since it loads no model library; ``bgremove i``
no slower than ``python -c "from rembg import remove, new_session; ..."``. Each figure is a
fresh process, timed from outside (wall) and by its CPU time (user + sys, which other
processes on a shared machine disturb less); the tools alternate, repeat after repeat, so a
change of load hits both. ``bgremove i`` runs with its defaults (refined edges: more work
than rembg's plain cut-out); ``--edges raw`` is rembg's cut-out.

Before timing, each tool processes the photo once: the OS caches the 176 MB model file, and
bgremove's u2net runtime choice is measured once and cached (as after any first run).

usage: .venv/bin/python -m benchmarks.bench_cli_start [--repeats 5] [--photo FILE]
       [--u2net-home .models/u2net] [--edges refined|raw]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT.parent / "shared" / "images" / "bike.jpg"
#: rembg's documented one-shot use, reading argv: photo, output
REMBG = (
    "import sys; from rembg import remove, new_session; "
    "session = new_session('u2net'); "
    "open(sys.argv[2], 'wb').write(remove(open(sys.argv[1], 'rb').read(), session=session))"
)


@dataclass
class Figures:
    """One command's timings, one per repeat."""

    label: str
    wall_s: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"{self.label}: wall min {min(self.wall_s):.3f} s, median "
            f"{statistics.median(self.wall_s):.3f} s; CPU min {min(self.cpu_s):.3f} s, "
            f"median {statistics.median(self.cpu_s):.3f} s ({len(self.wall_s)} runs)"
        )


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(cmd: list[str], env: dict[str, str], figures: Figures | None = None) -> None:
    """Run ``cmd`` to completion (it must succeed); add its wall and CPU time to ``figures``."""
    cpu = _children_cpu_s()
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    if figures is not None:
        figures.wall_s.append(wall)
        figures.cpu_s.append(_children_cpu_s() - cpu)


def cpu_model() -> str:
    """lscpu's model name (the figures' machine), else the platform's."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        out = ""
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each command")
    parser.add_argument("--photo", type=Path, default=PHOTO)
    parser.add_argument(
        "--u2net-home",
        type=Path,
        default=Path(os.environ.get("U2NET_HOME", ROOT / ".models" / "u2net")),
        help="folder of u2net.onnx, for both tools (default: $U2NET_HOME, else .models/u2net)",
    )
    parser.add_argument("--edges", choices=["refined", "raw"], default="refined")
    args = parser.parse_args()
    if not (args.u2net_home / "u2net.onnx").is_file():
        raise SystemExit(f"no u2net.onnx in {args.u2net_home}: run `bgremove fetch` first")

    bgremove = str(Path(sys.executable).parent / "bgremove")
    env = {
        **os.environ,
        "U2NET_HOME": str(args.u2net_home.resolve()),
        "BG_REMOVAL_U2NET_MODEL": "u2net",
        "BG_REMOVAL_U2NET_ALLOW_DOWNLOAD": "false",
        "BG_REMOVAL_ENV_FILE": "",  # no .env of the working directory
    }
    env.pop("BG_REMOVAL_U2NET_HOME", None)  # U2NET_HOME, rembg's, decides for both
    print(f"CPU: {cpu_model()} ({os.cpu_count()} CPUs)")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    help_ = Figures("bgremove --help")
    one = Figures(f"bgremove i --edges {args.edges}")
    rembg = Figures("rembg remove (python -c, new_session + remove)")
    with tempfile.TemporaryDirectory(prefix="bench-cli-start-") as tmp:
        out = Path(tmp)
        commands = (
            (help_, [bgremove, "--help"]),
            (one, [bgremove, "i", str(args.photo), str(out / "b.png"), "--edges", args.edges]),
            (rembg, [sys.executable, "-c", REMBG, str(args.photo), str(out / "r.png")]),
        )
        for _, cmd in commands:  # warm: file cache, bgremove's runtime choice
            timed(cmd, env)
        for repeat in range(args.repeats):
            order = commands if repeat % 2 == 0 else commands[::-1]
            for figures, cmd in order:
                timed(cmd, env, figures)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for figures in (help_, one, rembg):
        print(figures.line())
    ratio = statistics.median(one.wall_s) / statistics.median(rembg.wall_s)
    cpu_ratio = statistics.median(one.cpu_s) / statistics.median(rembg.cpu_s)
    print(f"bgremove i / rembg, medians: wall {ratio:.2f}x, CPU {cpu_ratio:.2f}x")


if __name__ == "__main__":
    main()
