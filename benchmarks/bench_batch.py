"""Throughput of `bgremove batch` on this machine, its per-stage costs, and a cluster on paper.

1. A folder of >= 200 photos: the shared photos at their own size, and again at 3000 px on
   the longer side (camera-size JPEGs), repeated.
2. Per-stage costs, one image at a time in this process, with the functions the job's
   stages call (`imaging.pipeline.decode_for`, `ModelInputSpec.to_input/to_size`, the U2-Net
   predictor at the job's one thread per actor, `imaging.pipeline.finish`, the write): CPU
   milliseconds per image, per size class.
3. What carrying the decoded photo between stages through Ray's object store would cost
   (one Arrow block per hop, as Ray Data moves rows) against decoding the file again in the
   finish stage, which is what the job does.
4. The job itself: `bgremove batch SRC DST --preset marketplace-white --model u2net` on a
   local Ray with this machine's CPUs; images/s, and the per-step times the manifest records
   (these include the contention of the stages running side by side).
5. With --rembg-compare: the whole `bgremove batch SRC DST --model u2net --edges raw`
   command (rembg's kind of output: a plain cut-out PNG; Ray's start included) against
   `rembg p -m u2net SRC DST` on the same folder, same run, wall time of each command.
6. On paper: images/s and cost per 1000 images for a cluster of N CPU nodes (U2-Net) and M
   GPUs (RMBG-2.0), from the per-stage costs of step 2. The GPU's own rate cannot be measured
   here (no GPU, no RMBG-2.0 weights): it is a parameter, as are prices and core counts.

Run: .venv/bin/python -m benchmarks.bench_batch [--u2net-model u2netp] [--gpus 4 ...]
     .venv/bin/python -m benchmarks.bench_batch --rembg-compare --skip-costs
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bgremove import batch, batch_command
from bgremove.batch_stages import resolve_tier
from bgremove.manifest import SUMMARY
from bgremove.storage import open_location
from deployments.settings import ServiceSettings
from imaging.options import RenderOptions
from imaging.pipeline import MaskOutcome, decode_for, finish
from imaging.presets import load_presets, preset_fields
from models.hardware import cpu_description, usable_cpus
from models.registry import RMBG, U2NET, get_tier, load_predictor

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT.parent / "shared" / "images"
LARGE_SIDE = 3000
CLASSES = ("own size", f"{LARGE_SIDE} px")
#: steps of the U2-Net path that run in the decode and finish tasks (CPU)
CPU_STEPS_U2NET = ("read", "decode", "to_input", "redecode", "to_size", "compose", "encode")
CPU_STEPS_U2NET += ("write",)


def load_text() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f} (1/5/15 min, {usable_cpus()} usable CPUs)"


def build_folder(images: Path, root: Path, total: int) -> dict[str, str]:
    """``total`` photos under ``root``: each shared photo at its own size, and at 3000 px as
    a JPEG, copied round-robin; returns file name -> size class."""
    sources: list[tuple[str, bytes, str]] = []
    for path in sorted(images.iterdir()):
        if path.suffix.lower() not in (".jpg", ".jpeg", ".png"):
            continue
        data = path.read_bytes()
        sources.append((path.name, data, CLASSES[0]))
        image = Image.open(io.BytesIO(data)).convert("RGB")
        scale = LARGE_SIDE / max(image.size)
        size = (round(image.width * scale), round(image.height * scale))
        out = io.BytesIO()
        image.resize(size, Image.Resampling.LANCZOS).save(out, "JPEG", quality=90)
        sources.append((f"{path.stem}-{LARGE_SIDE}.jpg", out.getvalue(), CLASSES[1]))
    root.mkdir(parents=True, exist_ok=True)
    classes: dict[str, str] = {}
    for i in range(total):
        name, data, cls = sources[i % len(sources)]
        rel = f"set{i // len(sources):02d}/{name}"
        (root / rel).parent.mkdir(exist_ok=True)
        (root / rel).write_bytes(data)
        classes[rel] = cls
    return classes


def service_settings(args: argparse.Namespace) -> ServiceSettings:
    """The service's settings for the job: its U2-Net, limits and tuning cache."""
    fields: dict[str, Any] = {"u2net_model": args.u2net_model, "u2net_allow_download": False}
    if args.u2net_path:
        fields["u2net_path"] = args.u2net_path
    if args.u2net_home:
        fields["u2net_home"] = args.u2net_home
    return ServiceSettings(**fields)


@dataclass
class Costs:
    """Median ms per image of each step, per size class."""

    steps: dict[str, dict[str, float]]
    #: share of each class in the job's folder
    mix: dict[str, float]

    def mean(self, step: str) -> float:
        return sum(self.steps[c][step] * share for c, share in self.mix.items())


def measure_costs(
    folder: Path, classes: dict[str, str], options: RenderOptions, service: ServiceSettings
) -> tuple[Costs, str]:
    """Per-step ms, one image at a time, with the job's functions and U2-Net at 1 thread."""
    limits = service.limits()
    config = replace(service.u2net_load_config(), threads=1)
    spec_u2, pinned = resolve_tier(U2NET, config)
    predictor: Any = load_predictor(U2NET, pinned)
    rmbg_spec = get_tier(RMBG).input_size(service.rmbg_load_config(), None)
    out = open_location(tempfile.mkdtemp(prefix="bench-batch-write-"))
    # one file per distinct photo and class (the folder repeats them)
    distinct: dict[str, str] = {}
    for rel in classes:
        distinct.setdefault(rel.split("/", 1)[1], rel)
    samples: dict[str, dict[str, list[float]]] = {c: {} for c in CLASSES}

    def timed(cls: str, step: str, fn: Any, *a: Any, **kw: Any) -> Any:
        start = time.perf_counter()
        value = fn(*a, **kw)
        samples[cls].setdefault(step, []).append((time.perf_counter() - start) * 1000)
        return value

    for rel in distinct.values():
        cls = classes[rel]
        for _ in range(2):
            data = timed(cls, "read", (folder / rel).read_bytes)
            decoded = timed(cls, "decode", decode_for, data, options, limits=limits)
            rgb = decoded.photo.rgb
            small = timed(cls, "to_input", spec_u2.to_input, rgb)
            small_rmbg = timed(cls, "to_input_rmbg", rmbg_spec.to_input, rgb)
            mask = timed(cls, "mask", predictor.predict, [small])[0]
            timed(cls, "redecode", decode_for, data, options, limits=limits)
            h, w = rgb.shape[:2]
            full = timed(cls, "to_size", spec_u2.to_size, mask, h, w)
            rmbg_mask = np.asarray(Image.fromarray(small_rmbg[..., 0]))  # a 1024 mask's shape
            timed(cls, "to_size_rmbg", rmbg_spec.to_size, rmbg_mask, h, w)
            timings: dict[str, float] = {}
            result = finish(decoded, MaskOutcome(full, U2NET), options, timings)
            samples[cls].setdefault("compose", []).append(timings["compose"])
            samples[cls].setdefault("encode", []).append(timings["encode"])
            timed(cls, "write", out.write, f"{rel}.out", result.body)
    shutil.rmtree(out.root, ignore_errors=True)
    steps = {c: {s: statistics.median(v) for s, v in d.items()} for c, d in samples.items()}
    total = len(classes)
    mix = {c: sum(1 for v in classes.values() if v == c) / total for c in CLASSES}
    info = predictor.info
    desc = f"U2-Net {info.weights.name}: {info.label} ({info.selection}), resize {info.resize}"
    return Costs(steps, mix), desc


def measure_object_store(folder: Path, classes: dict[str, str]) -> dict[str, float]:
    """ms per hop of an Arrow block holding one 3000 px photo between two Ray workers:
    the decoded RGB (what carrying pixels would send) and the encoded file (what is sent)."""
    import pyarrow as pa
    import ray

    @ray.remote(num_cpus=0)
    def produce(payload_bytes: int) -> tuple[Any, float]:
        start = time.perf_counter()
        table = pa.table({"data": pa.array([b"\x7f" * payload_bytes], pa.large_binary())})
        ref = ray.put(table)
        return [ref], (time.perf_counter() - start) * 1000

    @ray.remote(num_cpus=0)
    def consume(refs: list[Any]) -> float:
        start = time.perf_counter()
        table = ray.get(refs[0])
        value = table.column("data").to_pylist()[0]
        np.frombuffer(value, np.uint8).sum(dtype=np.uint64)
        return (time.perf_counter() - start) * 1000

    def hop(payload: int) -> float:
        runs = []
        for _ in range(5):
            refs, put_ms = ray.get(produce.remote(payload))
            runs.append(put_ms + ray.get(consume.remote(refs)))
        return statistics.median(runs)

    large = [rel for rel, cls in classes.items() if cls == CLASSES[1]]
    rgb_bytes = encoded = 0
    for rel in large[:8]:
        with Image.open(folder / rel) as im:
            rgb_bytes += im.width * im.height * 3
        encoded += (folder / rel).stat().st_size
    n = min(8, len(large))
    rgb_bytes, encoded = rgb_bytes // n, encoded // n
    return {
        "rgb_bytes": rgb_bytes,
        "encoded_bytes": encoded,
        "hop_rgb_ms": hop(rgb_bytes),
        "hop_encoded_ms": hop(encoded),
        "hop_small_ms": hop(320 * 320 * 3),
    }


def run_job(src: Path, dst: Path, args: argparse.Namespace) -> dict[str, Any]:
    """``bgremove batch`` through its own argument parser, on the Ray this process started."""
    # the command reads the service's settings from the environment, as it does for a user
    env = {"BG_REMOVAL_U2NET_MODEL": args.u2net_model, "BG_REMOVAL_U2NET_ALLOW_DOWNLOAD": "0"}
    if args.u2net_path:
        env["BG_REMOVAL_U2NET_PATH"] = args.u2net_path
    if args.u2net_home:
        env["U2NET_HOME"] = args.u2net_home
    os.environ.update(env)
    parser = argparse.ArgumentParser(prog="bgremove")
    batch_command.add_parser(parser.add_subparsers(dest="command", required=True))
    argv = ["batch", str(src), str(dst), "--preset", args.preset, "--model", "u2net"]
    cli_args = parser.parse_args(argv)
    status = cli_args.func(cli_args)
    summary = json.loads((dst / SUMMARY).read_text())
    summary["exit_status"] = status
    summary["argv"] = argv
    return summary


def compare_with_rembg(src: Path, work: Path, args: argparse.Namespace) -> list[str]:
    """Whole-command wall time of `bgremove batch` (plain cut-outs) and `rembg p`, same folder."""
    import subprocess

    env = {**os.environ, "BG_REMOVAL_U2NET_MODEL": args.u2net_model}
    env["BG_REMOVAL_U2NET_ALLOW_DOWNLOAD"] = "0"
    if args.u2net_home:
        env["U2NET_HOME"] = args.u2net_home
    # rembg p reads one folder level: the same photos, flat
    flat = work / "flat"
    shutil.rmtree(flat, ignore_errors=True)
    flat.mkdir(parents=True)
    for path in sorted(src.rglob("*")):
        if path.is_file():
            shutil.copy(path, flat / "_".join(path.relative_to(src).parts))
    count = sum(1 for _ in flat.iterdir())
    bgremove = str(Path(sys.executable).with_name("bgremove"))
    outputs = {"bgremove batch": work / "cmp-bgremove", "rembg p": work / "cmp-rembg"}
    job_flags = ["--model", "u2net", "--edges", "raw", *args.job_args.split()]
    runs = {
        "bgremove batch": [
            bgremove,
            "batch",
            str(flat),
            str(outputs["bgremove batch"]),
            *job_flags,
        ],
        "rembg p": [args.rembg, "p", "-m", args.u2net_model, str(flat), str(outputs["rembg p"])],
    }
    rates: dict[str, float] = {}
    lines = ["| command | images | wall s | images/s |", "| --- | ---: | ---: | ---: |"]
    for name, cmd in runs.items():
        shutil.rmtree(outputs[name], ignore_errors=True)
        print(f"running {name}: {' '.join(cmd)} (load {load_text()})", flush=True)
        start = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"{name} failed ({done.returncode}): {done.stderr[-2000:]}")
        rates[name] = count / wall
        lines.append(f"| `{name}` | {count} | {wall:.1f} | {rates[name]:.3f} |")
    ratio = rates["bgremove batch"] / rates["rembg p"]
    lines.append(f"\nbgremove batch / rembg p: **{ratio:.2f}x** (load after: {load_text()})")
    return lines


def cluster_estimate(costs: Costs, args: argparse.Namespace) -> list[str]:
    """Images/s and $ per 1000 images on paper, from the measured per-stage costs."""
    scale, eff = args.cpu_speed, args.efficiency
    cpu_u2 = sum(costs.mean(s) for s in CPU_STEPS_U2NET) / 1000 / scale  # CPU-s per image
    mask_u2 = costs.mean("mask") / 1000 / scale
    cpu_rmbg = (
        cpu_u2
        + (costs.mean("to_input_rmbg") + costs.mean("to_size_rmbg") - costs.mean("to_size"))
        / 1000
        / scale
    )
    lines = [
        "assumptions: cluster cores as fast as this machine's x"
        f"{scale:g}; {eff:.0%} of reserved cores do stage work (Ray/Arrow overhead, "
        "imbalance); the stages' per-image CPU costs as measured above (dataset mix); one "
        "U2-Net thread per actor; network and S3 not limiting (S3 GET/PUT request charges: "
        f"${args.s3_request_price_per_1000:g} per 1000 images, added);",
        f"  CPU node: {args.cpu_node_cores} cores at ${args.cpu_node_price:g}/h; GPU node: one "
        f"GPU + {args.gpu_node_cores} cores at ${args.gpu_node_price:g}/h; head "
        f"${args.head_price:g}/h (no work on it, as configs/kuberay/rayjob.yaml); RMBG-2.0 "
        f"per GPU: {args.gpu_images_per_s:g} images/s (ASSUMED, not measured here); each GPU "
        "actor holds 1 core, the U2-Net fallback pool 1 core.",
        f"  CPU-s per image: U2-Net path {cpu_u2:.3f} (stages) + {mask_u2:.3f} (mask) = "
        f"{cpu_u2 + mask_u2:.3f}; RMBG-2.0 path (stages incl. 1024 px resizes) {cpu_rmbg:.3f}",
        "",
        "| cluster | bottleneck | images/s | $/h | $ per 1000 images |",
        "| --- | --- | ---: | ---: | ---: |",
    ]

    def row(n: int, m: int) -> str:
        if m == 0:
            cores = n * args.cpu_node_cores * eff
            rate = cores / (cpu_u2 + mask_u2)
            bottleneck = "CPU (U2-Net + stages)"
        else:
            cores = (n * args.cpu_node_cores + m * (args.gpu_node_cores - 1) - 1) * eff
            cpu_rate = max(cores, 0.0) / cpu_rmbg
            gpu_rate = m * args.gpu_images_per_s
            rate = min(cpu_rate, gpu_rate)
            bottleneck = "GPU" if gpu_rate <= cpu_rate else "CPU stages"
        hourly = n * args.cpu_node_price + m * args.gpu_node_price + args.head_price
        per_1000 = hourly / 3600 / rate * 1000 + args.s3_request_price_per_1000
        name = f"{n} CPU node(s)" + (f" + {m} GPU(s), RMBG-2.0" if m else ", U2-Net")
        return f"| {name} | {bottleneck} | {rate:.1f} | {hourly:.2f} | {per_1000:.3f} |"

    for n in sorted({1, 4, args.cpu_nodes}):
        lines.append(row(n, 0))
    for m in sorted({1, args.gpus}):
        # CPU nodes needed to keep m GPUs busy, besides the GPU nodes' own cores
        need = m * args.gpu_images_per_s * cpu_rmbg / eff + 1 - m * (args.gpu_node_cores - 1)
        balanced = max(0, int(np.ceil(need / args.cpu_node_cores)))
        for n in sorted({0, balanced, args.cpu_nodes}):
            lines.append(row(n, m))
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, default=IMAGES)
    parser.add_argument("--count", type=int, default=200, help="photos in the job's folder")
    parser.add_argument("--preset", default="marketplace-white")
    parser.add_argument("--u2net-model", default="u2net")
    parser.add_argument("--u2net-path", default=None)
    default_home = os.environ.get("U2NET_HOME") or (
        str(ROOT / ".models" / "u2net") if (ROOT / ".models" / "u2net").is_dir() else None
    )
    parser.add_argument("--u2net-home", default=default_home)
    parser.add_argument("--cpus", type=int, default=usable_cpus(), help="Ray's logical CPUs")
    parser.add_argument("--work-dir", type=Path, default=None, help="default: a temp dir")
    paper = parser.add_argument_group("cluster on paper (prices: on-demand, USD)")
    paper.add_argument("--cpu-nodes", type=int, default=8)
    paper.add_argument("--cpu-node-cores", type=int, default=8, help="rayjob.yaml's cpu group")
    paper.add_argument("--cpu-node-price", type=float, default=0.34, help="8 vCPU, 32 GiB")
    paper.add_argument("--gpus", type=int, default=4, help="GPU nodes, one GPU each")
    paper.add_argument("--gpu-node-cores", type=int, default=6, help="rayjob.yaml's gpu group")
    paper.add_argument("--gpu-node-price", type=float, default=0.80, help="1x L4-class GPU")
    paper.add_argument("--gpu-images-per-s", type=float, default=10.0, help="RMBG-2.0 per GPU")
    paper.add_argument("--head-price", type=float, default=0.10)
    paper.add_argument("--cpu-speed", type=float, default=1.0, help="cluster core / this core")
    paper.add_argument("--efficiency", type=float, default=0.85)
    paper.add_argument(
        "--s3-request-price-per-1000",
        type=float,
        default=0.0054,
        help="1000 GETs ($0.0004) + 1000 PUTs ($0.005), S3 standard",
    )
    cmp = parser.add_argument_group("same-run comparison with rembg p")
    cmp.add_argument("--rembg-compare", action="store_true")
    cmp.add_argument("--rembg", default=str(ROOT / ".venv-rembg" / "bin" / "rembg"))
    cmp.add_argument(
        "--job-args",
        default="",
        help="extra `bgremove batch` flags for the comparison, e.g. '--u2net-cpus 1.5'",
    )
    cmp.add_argument(
        "--skip-costs", action="store_true", help="only the comparison (steps 1 and 5)"
    )
    args = parser.parse_args()

    import ray

    print(f"CPU: {cpu_description()}")
    print(f"load before: {load_text()}")
    print(f"ray {ray.__version__}, python {sys.version.split()[0]}")
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="bench-batch-"))
    src, dst = work / "photos", work / "cutouts"
    shutil.rmtree(dst, ignore_errors=True)
    classes = build_folder(args.images, src, args.count)
    mix = {c: sum(1 for v in classes.values() if v == c) for c in CLASSES}
    print(f"folder: {len(classes)} photos under {src}: {mix}")
    if args.rembg_compare:
        print("\n## `bgremove batch` against `rembg p`, same folder, same run")
        print("\n".join(compare_with_rembg(src, work, args)))
        if args.skip_costs:
            return 0

    service = service_settings(args)
    options = RenderOptions.parse(
        {"preset": args.preset}, presets=preset_fields(load_presets(service.presets_file))
    )
    costs, model = measure_costs(src, classes, options, service)
    print(f"\n## per-stage costs, one image at a time, ms (median), preset {args.preset}")
    print(f"model: {model}")
    steps = list(costs.steps[CLASSES[0]])
    print("| step | " + " | ".join(CLASSES) + " | job mix |")
    print("| --- |" + " ---: |" * (len(CLASSES) + 1))
    for step in steps:
        cells = " | ".join(f"{costs.steps[c][step]:.1f}" for c in CLASSES)
        print(f"| {step} | {cells} | {costs.mean(step):.1f} |")
    cpu_path = sum(costs.mean(s) for s in CPU_STEPS_U2NET) + costs.mean("mask")
    print(f"CPU ms per image, U2-Net path, job mix: {cpu_path:.0f}")

    start = time.perf_counter()
    ray.init(
        address="local",
        num_cpus=args.cpus,
        include_dashboard=False,
        logging_level="warning",
        log_to_driver=False,
    )
    ray_start_s = time.perf_counter() - start
    try:
        store = measure_object_store(src, classes)
        print("\n## carrying the decoded photo vs decoding it again (3000 px class)")
        print(
            f"one hop through the object store (Arrow block, put + get + read): decoded RGB "
            f"{store['rgb_bytes'] / 1e6:.1f} MB {store['hop_rgb_ms']:.1f} ms; encoded file "
            f"{store['encoded_bytes'] / 1e6:.2f} MB {store['hop_encoded_ms']:.1f} ms; "
            f"model input 0.31 MB {store['hop_small_ms']:.1f} ms"
        )
        extra = 2 * (store["hop_rgb_ms"] - store["hop_encoded_ms"])
        redecode = costs.steps[CLASSES[1]]["redecode"]
        print(
            f"pixels carried decode -> mask -> finish: +{extra:.1f} ms of copies per image on "
            f"one node (+{2 * store['rgb_bytes'] * 8 / 10e9 * 1000:.0f} ms on a 10 Gbit/s "
            f"link between nodes) and {store['rgb_bytes'] / store['encoded_bytes']:.0f}x the "
            f"object store; decoding again: {redecode:.1f} ms CPU"
        )
        load_job = load_text()
        summary = run_job(src, dst, args)
    finally:
        ray.shutdown()
    print(f"\n## the job: {' '.join(['bgremove', *summary['argv']])}")
    print(f"local Ray: {args.cpus} CPUs, started in {ray_start_s:.1f} s (not in the job's time)")
    print(f"load at start: {load_job}; at end: {load_text()}")
    print(
        f"{summary['succeeded']} ok, {summary['failed']} failed in {summary['wall_s']:.1f} s: "
        f"**{summary['images_per_s']:.2f} images/s** (exit status {summary['exit_status']}; "
        "the time includes the job's start: listing, U2-Net's load, actor start)"
    )
    n = max(summary["succeeded"], 1)
    steps_ms = summary["step_ms"]
    inline = ", ".join(f"{s} {steps_ms[s] / n:.0f}" for s in batch.STEPS if s in steps_ms)
    print(f"per image in the job, mean ms (with the stages contending for cores): {inline}")
    mask_s = costs.mean("mask") / 1000
    stages_s = sum(costs.mean(s) for s in CPU_STEPS_U2NET) / 1000
    actors = int(summary["stages"][U2NET]["max_actors"])
    pool_bound = min(actors / mask_s, (args.cpus - actors) * args.efficiency / stages_s)
    balanced = args.cpus * args.efficiency / (mask_s + stages_s)
    print(
        f"model check: with {actors} U2-Net actor(s) of 1 CPU ({mask_s:.3f} s per mask) and "
        f"the other {args.cpus - actors} CPU(s) for the stages ({stages_s:.3f} CPU-s per "
        f"image): {pool_bound:.2f} images/s predicted, {summary['images_per_s']:.2f} measured; "
        f"cores split to balance (the cluster estimate below): {balanced:.2f}"
    )
    print("\n## on paper: a cluster")
    print("\n".join(cluster_estimate(costs, args)))
    if args.work_dir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
