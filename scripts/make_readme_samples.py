#!/usr/bin/env python
"""Make the README's sample outputs through a running service (real models, real API).

    scripts/run.sh &   # then:
    .venv/bin/python scripts/make_readme_samples.py [--url http://127.0.0.1:8000]

For each photo: the plain cut-out and the three styles at 4:5; for the first photo, each
output option (background colour and image, crop, exact size, the mask alone, the
marketplace preset). Saved small (300 px wide) under docs/samples/, with the model that
made each mask, and the README's tables printed.
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
BACKDROP = "boat.jpg"
#: README name -> form fields; `bg_image_file` is sent as a second upload (BACKDROP)
OPTIONS: dict[str, dict[str, str]] = {
    "bg_color": {"bg_color": "dbe7f0"},
    "bg_image_file": {"bg_image_file": BACKDROP, "format": "jpeg"},
    "crop": {"crop": "true", "crop_margin": "5%"},
    "output_size": {"output_size": "800x400", "bg_color": "f4efe6"},
    "channels": {"channels": "alpha"},
    "preset": {"preset": "marketplace-white"},
}


def _post(url: str, name: str, data: bytes, fields: dict[str, str], images: Path) -> httpx.Response:
    files = {"file": (name, data)}
    fields = dict(fields)
    backdrop = fields.pop("bg_image_file", None)
    if backdrop is not None:
        files["bg_image_file"] = (backdrop, (images / backdrop).read_bytes())
    r = httpx.post(f"{url}/api/v1/remove-background", files=files, data=fields, timeout=300)
    r.raise_for_status()
    print(f"{name} {fields}: {r.headers['x-model-used']} {r.headers.get('x-fallback-reason', '')}")
    return r


def _save(r: httpx.Response, path: Path) -> None:
    image = Image.open(io.BytesIO(r.content))
    image.thumbnail((WIDTH, WIDTH * 2))
    if path.suffix == ".png":
        image.save(path, optimize=True)
    else:
        image.convert("RGB").save(path, quality=85)


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
            r = _post(args.url, name, data, fields, args.images)
            stem = f"{Path(name).stem}_{variant}"
            path = args.out / (f"{stem}.png" if variant == "cutout" else f"{stem}.jpg")
            _save(r, path)
            cells.append(f"![{variant}](docs/samples/{path.name})")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    print("| photo | cut-out | minimal | mood | street |\n| --- | --- | --- | --- | --- |")
    print("\n".join(rows))

    name = args.photos[0]
    data = (args.images / name).read_bytes()
    print("\n| option | fields | result |\n| --- | --- | --- |")
    for option, fields in OPTIONS.items():
        r = _post(args.url, name, data, fields, args.images)
        suffix = ".png" if r.headers["content-type"] == "image/png" else ".jpg"
        path = args.out / f"option_{option}{suffix}"
        _save(r, path)
        shown = " ".join(f"`{k}={v}`" for k, v in fields.items())
        print(f"| `{option}` | {shown} | ![{option}](docs/samples/{path.name}) |")


if __name__ == "__main__":
    main()
