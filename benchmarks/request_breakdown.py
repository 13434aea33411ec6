"""Where one request's time goes, stage by stage, in the old flow and the new one.

Old flow: the ingress sent the decoded photo (3 bytes a pixel) through Ray's object
store to the U2-Net replica, which resized it, ran the model and resized the mask
back. New flow: the ingress shrinks the photo to the model input, sends that
(320x320x3 = 300 KB) and enlarges the 320x320 mask itself. Both flows run the same
code as the service, in one process, on the same photos, interleaved; the object
store's cost is measured as a `ray.put` + `ray.get` of what each flow sends and gets.

    .venv/bin/python benchmarks/request_breakdown.py --model u2net --repeats 5

Prints a table per photo size (median ms per stage) and the CPU model.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import ray
from PIL import Image

from imaging.decode import decode_image
from imaging.encode import encode_image
from imaging.options import RenderOptions
from imaging.render import compose
from imaging.resize import ModelInputSpec
from models.hardware import cpu_description as cpu_model
from models.u2net import U2NetPredictor
from models.u2net_transforms import resize_filters

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT.parent / "shared" / "images"


def timed(stages: dict[str, list[float]], name: str, fn: Callable[[], Any]) -> Any:
    start = time.perf_counter()
    out = fn()
    stages[name].append((time.perf_counter() - start) * 1000)
    return out


def render(decoded: Any, mask: np.ndarray, options: RenderOptions) -> tuple[bytes, str]:
    return encode_image(compose(decoded, mask, options), options.fmt)


def through_object_store(value: np.ndarray) -> np.ndarray:
    return ray.get(ray.put(value))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="u2net")
    parser.add_argument("--home", default=None, help="U2NET_HOME (default: rembg's)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    opts = parser.parse_args()

    ray.init(num_cpus=1, include_dashboard=False, logging_level="error")
    predictor = U2NetPredictor.load(opts.model, home=opts.home, threads=opts.threads)
    info = predictor.info
    reducing_gap, upscale = resize_filters(info.resize)
    spec = ModelInputSpec(
        width=info.input_size[0],
        height=info.input_size[1],
        downscale="lanczos",
        reducing_gap=reducing_gap,
        upscale=Image.Resampling(upscale).name.lower(),
    )
    options = RenderOptions()
    photos = {"small (own size)": [], "3000 px wide": []}
    for path in sorted(IMAGES.iterdir()):
        if path.suffix.lower() not in {".jpg", ".png"}:
            continue
        photos["small (own size)"].append(path.read_bytes())
        with Image.open(path) as image:
            rgb = image.convert("RGB")
            big = rgb.resize((3000, round(rgb.height * 3000 / rgb.width)), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        big.save(buf, "JPEG", quality=95)
        photos["3000 px wide"].append(buf.getvalue())

    print(
        f"CPU: {cpu_model()}; model {opts.model}, {info.runtime}/{info.precision}/{info.threads}t"
    )
    for label, datas in photos.items():
        old: dict[str, list[float]] = defaultdict(list)
        new: dict[str, list[float]] = defaultdict(list)
        for _ in range(opts.repeats):
            for data in datas:
                decoded = decode_image(data, max_bytes=10**8, max_pixels=10**8)
                h, w = decoded.rgb.shape[:2]
                # old: whole photo to the replica, which resizes both ways
                sent = timed(old, "object store", lambda d=decoded: through_object_store(d.rgb))
                mask = timed(old, "model replica", lambda s=sent: predictor.predict([s])[0])
                mask = timed(old, "object store", lambda m=mask: through_object_store(m))
                timed(old, "compose + encode", lambda m=mask, d=decoded: render(d, m, options))
                # new: the ingress resizes, only the model's input travels
                small = timed(new, "resize in ingress", lambda d=decoded: spec.to_input(d.rgb))
                sent = timed(new, "object store", lambda s=small: through_object_store(s))
                small_mask = timed(new, "model replica", lambda s=sent: predictor.predict([s])[0])
                small_mask = timed(
                    new, "object store", lambda m=small_mask: through_object_store(m)
                )
                mask = timed(
                    new, "resize in ingress", lambda m=small_mask, h=h, w=w: spec.to_size(m, h, w)
                )
                timed(new, "compose + encode", lambda m=mask, d=decoded: render(d, m, options))
        print(f"\n{label}: median ms per request over {len(datas)} photos x {opts.repeats}")
        print("| stage | old flow | new flow |")
        print("| --- | --- | --- |")
        stages = ["resize in ingress", "object store", "model replica", "compose + encode"]
        totals = {"old": 0.0, "new": 0.0}
        for stage in stages:
            row = []
            for name, table in (("old", old), ("new", new)):
                per_request = _per_request(table.get(stage, []), len(datas) * opts.repeats)
                totals[name] += per_request
                row.append(f"{per_request:.1f}" if table.get(stage) else "-")
            print(f"| {stage} | {row[0]} | {row[1]} |")
        print(f"| total | {totals['old']:.1f} | {totals['new']:.1f} |")
    ray.shutdown()


def _per_request(samples: list[float], requests: int) -> float:
    """Median over requests of the summed stage time (a stage may run twice a request)."""
    if not samples:
        return 0.0
    per = len(samples) // requests
    sums = [sum(samples[i * per : (i + 1) * per]) for i in range(requests)]
    return statistics.median(sums)


if __name__ == "__main__":
    main()
