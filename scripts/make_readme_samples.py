#!/usr/bin/env python
"""Make the README's sample outputs through a running service (real models, real API).

    scripts/run.sh &   # then:
    .venv/bin/python scripts/make_readme_samples.py [--url http://127.0.0.1:8000]

For each photo: the plain cut-out and the three styles at 4:5, saved small
(300 px wide) under docs/samples/, with the model that made each mask.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import httpx
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ["lamp2_meitu_1.jpg", "horse.jpg", "0002-01.jpg"]
WIDTH = 300


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--images", type=Path, default=ROOT.parent / "shared" / "images")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "samples")
    parser.add_argument("photos", nargs="*", default=PHOTOS)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    variants = {
        "cutout": {},
        **{s: {"style": s, "ratio": "4:5"} for s in ("minimal", "mood", "street")},
    }
    rows = []
    for name in args.photos:
        data = (args.images / name).read_bytes()
        cells = []
        for variant, fields in variants.items():
            r = httpx.post(
                f"{args.url}/api/v1/remove-background",
                files={"file": (name, data)},
                data=fields,
                timeout=300,
            )
            r.raise_for_status()
            image = Image.open(io.BytesIO(r.content))
            image.thumbnail((WIDTH, WIDTH * 2))
            stem = f"{Path(name).stem}_{variant}"
            path = args.out / (f"{stem}.png" if variant == "cutout" else f"{stem}.jpg")
            if variant == "cutout":
                image.save(path, optimize=True)
            else:
                image.convert("RGB").save(path, quality=85)
            cells.append(f"![{variant}](samples/{path.name})")
            print(f"{path}: {r.headers['x-model-used']} {r.headers.get('x-fallback-reason', '')}")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    print("| photo | cut-out | minimal | mood | street |\n| --- | --- | --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
