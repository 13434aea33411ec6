#!/usr/bin/env python
"""How far OpenVINO bf16 u2net masks are from rembg's, with exact and fast resizing.

Every shared photo at its own size and upscaled to 3000 px wide; prints each
case and the worst mean |diff| and share of pixels off by more than 32
(the tolerance: <= 1.0 and <= 0.5%). This is the evidence behind offering
bf16 (with exact resizing) to the load-time selection for rembg's u2net; the
selection then keeps it only where it measures faster. Run it on a CPU with
native bf16: elsewhere OpenVINO runs f32 under a bf16 hint, and the script says so.

usage: U2NET_HOME=~/.u2net .venv/bin/python -m benchmarks.check_u2net_bf16 [--images DIR]
"""

from __future__ import annotations

import argparse
import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from models.u2net import U2NetPredictor, default_threads
from models.u2net_tuning import cpu_has_native_bf16

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=ROOT.parent / "shared" / "images")
    args = parser.parse_args()
    home = Path(os.environ.get("U2NET_HOME", "~/.u2net")).expanduser()
    os.environ["U2NET_HOME"] = str(home)
    from rembg import new_session, remove

    if not cpu_has_native_bf16():
        print("warning: this CPU has no native bf16; OpenVINO runs f32, so these are f32 numbers")
    session = new_session("u2net")
    predictors = {
        resize: U2NetPredictor.load(
            "u2net",
            home=home,
            runtime="openvino",
            precision="bf16",
            resize=resize,
            threads=default_threads(),  # all pinned: no load-time timing
            allow_download=False,
        )
        for resize in ("exact", "fast")
    }
    worst = {resize: [0.0, 0.0] for resize in predictors}
    for path in sorted(p for p in args.images.iterdir() if p.suffix in {".jpg", ".png"}):
        rgb = Image.open(path).convert("RGB")
        big = rgb.resize((3000, round(rgb.height * 3000 / rgb.width)), Image.Resampling.LANCZOS)
        for name, image in ((path.name, rgb), (f"{path.name}@3000w", big)):
            buf = io.BytesIO()
            image.save(buf, "PNG")
            ref = np.asarray(
                Image.open(io.BytesIO(remove(buf.getvalue(), session=session, only_mask=True)))
            ).astype(int)
            for resize, predictor in predictors.items():
                (mask,) = predictor.predict([np.asarray(image)])
                diff = np.abs(mask.astype(int) - ref)
                mad, far = diff.mean(), (diff > 32).mean()
                worst[resize] = [max(worst[resize][0], mad), max(worst[resize][1], far)]
                print(f"{name:28s} {resize:5s} mean |diff| {mad:.3f}  >32: {far:.3%}")
    for resize, (mad, far) in worst.items():
        print(f"worst, {resize} resize: mean |diff| {mad:.3f}, >32: {far:.3%}")


if __name__ == "__main__":
    main()
