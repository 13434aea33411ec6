#!/usr/bin/env python
"""U2-Net tier, end to end: our service over HTTP against rembg, in one run.

Three systems on the same machine, same photos, same model file:
  - ours:      this service over HTTP (CPU config, U2-Net only), PNG cut-out;
  - remove():  rembg's in-process `remove(data, session=new_session(model))`;
  - rembg s:   rembg's own HTTP server (`rembg s --no-ui`), POST /api/remove.

Latency: each photo at its own size and upscaled to 3000 px wide, medians of
`--repeats` runs, systems interleaved per photo so drift hits all alike.
Throughput: `--concurrency` clients posting the photos at their own size, ours
against `rembg s`.

rembg's CLI pins an older FastAPI than Ray Serve needs, so `rembg s` runs from
its own virtualenv (`--rembg-venv`, default .venv-rembg; created with
`python -m venv .venv-rembg && .venv-rembg/bin/pip install "rembg[cpu,cli]==2.0.86"`).
Both servers read the weights from the same `U2NET_HOME`, fetched beforehand
with `scripts/fetch_models.py`.

usage: .venv/bin/python -m benchmarks.bench_u2net [--images DIR] [--model u2net] [--repeats 3]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from PIL import Image

from models.hardware import cpu_description

ROOT = Path(__file__).resolve().parents[1]
SHARED_IMAGES = ROOT.parent / "shared" / "images"
LARGE_WIDTH = 3000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _inputs(folder: Path) -> list[tuple[str, bytes]]:
    """Each photo as its file's bytes, and upscaled to 3000 px wide as JPEG q95."""
    photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".png"})
    out: list[tuple[str, bytes]] = []
    for path in photos:
        out.append((path.name, path.read_bytes()))
    for path in photos:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
            height = round(rgb.height * LARGE_WIDTH / rgb.width)
            big = rgb.resize((LARGE_WIDTH, height), Image.Resampling.LANCZOS)
            buf = io.BytesIO()
            big.save(buf, "JPEG", quality=95)
            out.append((f"{path.stem}@{LARGE_WIDTH}w.jpg", buf.getvalue()))
    return out


def _wait(url: str, ok: Callable[[httpx.Response], bool], timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if ok(httpx.get(url, timeout=10)):
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise SystemExit(f"{url} did not come up within {timeout_s} s")


def _start_ours(model: str, home: Path, port: int, threads: int) -> subprocess.Popen[bytes]:
    config = {
        "proxy_location": "HeadOnly",
        "http_options": {"host": "127.0.0.1", "port": port, "request_timeout_s": 300},
        "applications": [
            {
                "name": "bench",
                "route_prefix": "/",
                "import_path": "deployments.app:build_app",
                "args": {
                    "model": "u2net",
                    "device": "cpu",
                    "u2net_model": model,
                    "u2net_home": str(home),
                    "u2net_threads": threads,
                    "u2net_num_cpus": 1,
                    "u2net_num_replicas": 1,
                    "ingress_num_cpus": 0.5,
                    "ingress_num_replicas": 1,
                    "health_details": True,
                },
            }
        ],
    }
    path = Path(tempfile.mkdtemp()) / "bench.json"
    path.write_text(json.dumps(config))
    yaml_path = path.with_suffix(".yaml")
    # JSON is valid YAML.
    yaml_path.write_text(path.read_text())
    serve = Path(sys.executable).parent / "serve"
    proc = subprocess.Popen(
        [str(serve), "run", str(yaml_path)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    _wait(
        f"http://127.0.0.1:{port}/api/v1/health",
        lambda r: r.status_code == 200 and r.json().get("status") == "healthy",
    )
    return proc


def _u2net_status(port: int) -> dict[str, object]:
    """Our U2-Net replica's status as health's details show it."""
    health = httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=30).json()
    return health["models"]["u2net"]["status"] or {}


def _our_choice(port: int) -> dict[str, object]:
    """The U2-Net runtime our replica chose, and the timings it chose by (health details)."""
    status = _u2net_status(port)
    keys = ("runtime", "precision", "threads", "resize", "selection", "timings_ms")
    return {key: status.get(key) for key in keys}


def _wait_for_int8(port: int, started: float, timeout_s: float) -> None:
    """Until our replica serves its own INT8 model, or its build ends without one."""
    status: dict[str, object] = {}
    while time.monotonic() - started < timeout_s:
        status = _u2net_status(port)
        int8 = status.get("int8")
        state = int8.get("state") if isinstance(int8, dict) else None
        if status.get("precision") == "int8" or state in ("refused", "failed", "off"):
            break
        time.sleep(1)
    print(
        f"{time.monotonic() - started:.0f} s after the start: serving "
        f"{status.get('precision')}, INT8 build {status.get('int8')}",
        flush=True,
    )


def _start_rembg(venv: Path, home: Path, port: int) -> subprocess.Popen[bytes]:
    """rembg's server; its first start in a new venv compiles for minutes, hence the wait."""
    env = {**os.environ, "U2NET_HOME": str(home)}
    proc = subprocess.Popen(
        [str(venv / "bin" / "rembg"), "s", "--host", "127.0.0.1", "--port", str(port), "--no-ui"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait(f"http://127.0.0.1:{port}/api", lambda r: r.status_code < 500, timeout_s=600)
    except BaseException:
        _stop(proc)
        raise
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=60)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=SHARED_IMAGES)
    parser.add_argument("--model", default="u2net")
    parser.add_argument("--home", type=Path, default=Path(os.environ.get("U2NET_HOME", "~/.u2net")))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3, help="Throughput: passes over photos.")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--rembg-venv", type=Path, default=ROOT / ".venv-rembg")
    parser.add_argument("--out", type=Path, default=ROOT / "test_results" / "bench_u2net")
    parser.add_argument(
        "--wait-int8",
        type=float,
        default=0.0,
        metavar="S",
        help="wait up to S seconds for the tier's own INT8 model (a CPU without bf16, "
        "default config) before timing, and print how long after the start it served",
    )
    args = parser.parse_args()
    home = args.home.expanduser().resolve()
    if not (home / f"{args.model}.onnx").is_file():
        raise SystemExit(f"no {args.model}.onnx in {home}: run scripts/fetch_models.py first")
    os.environ["U2NET_HOME"] = str(home)

    from rembg import new_session, remove

    inputs = _inputs(args.images)
    ours_port, rembg_port = _free_port(), _free_port()
    print(f"machine: {cpu_description()}, {os.cpu_count()} cores")
    print("starting our service and rembg s ...", flush=True)
    started = time.monotonic()
    ours_proc = _start_ours(args.model, home, ours_port, args.threads)
    try:
        if args.wait_int8:
            _wait_for_int8(ours_port, started, args.wait_int8)
        rembg_proc = _start_rembg(args.rembg_venv, home, rembg_port)
    except BaseException:
        _stop(ours_proc)  # a failed start must not leave our service running
        raise
    choice = _our_choice(ours_port)
    print(f"ours: {choice}", flush=True)
    session = new_session(args.model)
    # Idle connections are dropped well before the servers' keep-alive timeout (uvicorn's 5 s):
    # a request on a connection the server is closing at that moment is reset, and a photo's
    # turns of the other two systems can take about that long.
    client = httpx.Client(timeout=300, limits=httpx.Limits(keepalive_expiry=2.0))

    def ours(data: bytes) -> bytes:
        r = client.post(
            f"http://127.0.0.1:{ours_port}/api/v1/remove-background",
            files={"file": ("x", data)},
        )
        r.raise_for_status()
        assert r.headers["x-model-used"] == "u2net"
        return r.content

    def rembg_s(data: bytes) -> bytes:
        r = client.post(
            f"http://127.0.0.1:{rembg_port}/api/remove",
            files={"file": ("x", data)},
            data={"model": args.model},
        )
        r.raise_for_status()
        return r.content

    def in_process(data: bytes) -> bytes:
        return remove(data, session=session)

    systems: dict[str, Callable[[bytes], bytes]] = {
        "remove()": in_process,
        "ours (HTTP)": ours,
        "rembg s (HTTP)": rembg_s,
    }
    try:
        for fn in systems.values():  # warm-up: sessions, first-call allocations
            fn(inputs[0][1])
        rows = []
        for name, data in inputs:
            with Image.open(io.BytesIO(data)) as im:
                size = f"{im.width}x{im.height}"
            times: dict[str, float] = {}
            sizes: dict[str, int] = {}
            for label, fn in systems.items():
                samples = []
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    body = fn(data)
                    samples.append(time.perf_counter() - start)
                times[label] = statistics.median(samples)
                sizes[label] = len(body)
            rows.append({"image": name, "size": size, "seconds": times, "bytes": sizes})
            print(
                f"{name:28s} {size:>10s} "
                + " ".join(f"{k}={v:.3f}s" for k, v in times.items())
                + f"  speedup vs remove()={times['remove()'] / times['ours (HTTP)']:.2f}x",
                flush=True,
            )

        small = [d for n, d in inputs if "@" not in n]
        throughput: dict[str, float] = {}
        for label in ("ours (HTTP)", "rembg s (HTTP)"):
            fn = systems[label]
            jobs = small * args.rounds
            start = time.perf_counter()
            with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
                list(pool.map(fn, jobs))
            throughput[label] = len(jobs) / (time.perf_counter() - start)
            print(f"throughput {label}: {throughput[label]:.2f} images/s", flush=True)
    finally:
        client.close()
        _stop(ours_proc)
        _stop(rembg_proc)

    _report(rows, throughput, args, choice)


def _report(
    rows: list[dict],
    throughput: dict[str, float],
    args: argparse.Namespace,
    choice: dict[str, object],
) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    lines = [
        f"model `{args.model}`, {args.repeats} repeats (median), "
        f"{args.concurrency} concurrent clients for throughput",
        "",
        "| photo | size | remove() s | ours s | rembg s s | ours vs remove() | ours vs rembg s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        t = row["seconds"]
        lines.append(
            f"| {row['image']} | {row['size']} | {t['remove()']:.3f} | {t['ours (HTTP)']:.3f} | "
            f"{t['rembg s (HTTP)']:.3f} | {t['remove()'] / t['ours (HTTP)']:.2f}x | "
            f"{t['rembg s (HTTP)'] / t['ours (HTTP)']:.2f}x |"
        )
    for kind, pick in (("own size", lambda n: "@" not in n), ("3000 px wide", lambda n: "@" in n)):
        sel = [r["seconds"] for r in rows if pick(r["image"])]
        ratio = statistics.median(s["remove()"] / s["ours (HTTP)"] for s in sel)
        lines.append(f"\nmedian speedup vs remove(), {kind}: {ratio:.2f}x")
    ours_tp, rembg_tp = throughput["ours (HTTP)"], throughput["rembg s (HTTP)"]
    lines.append(
        f"\nthroughput, {args.concurrency} clients: ours {ours_tp:.2f} img/s, "
        f"rembg s {rembg_tp:.2f} img/s, ratio {ours_tp / rembg_tp:.2f}x"
    )
    text = "\n".join(lines)
    print("\n" + text)
    (args.out / "results.md").write_text(text + "\n")
    (args.out / "results.json").write_text(
        json.dumps({"rows": rows, "throughput": throughput, "ours": choice}, indent=2)
    )


if __name__ == "__main__":
    main()
