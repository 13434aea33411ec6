#!/usr/bin/env python
"""Before/after crops of soft-edge colours for the README: raw vs refined edges.

    .venv/bin/python scripts/make_edge_samples.py

Cuts the horse out of ../shared/images/horse.jpg with the real U2-Net (u2net when
.models/u2net/u2net.onnx exists, else u2netp from ../shared/models), puts the cut-out on a
flat dark backdrop (the dark slate of the ``mood`` style) once with the photo's own edge colours
(``edges="raw"``) and once with refined ones (``edges="refined"``), and saves the tail, zoomed
2x (nearest), as docs/samples/edges_raw.png and docs/samples/edges_refined.png. On the raw one
the soft tail hairs keep the meadow's green; on the refined one they are dark like the tail.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from imaging.compose import cutout
from models.u2net import U2NetPredictor

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
BACKDROP = (26, 34, 52)  # the mood style's darkest corner
TAIL = (520, 200, 740, 360)  # (left, top, right, bottom) of the tail in horse.jpg (770x595)
ZOOM = 2


def load_predictor() -> U2NetPredictor:
    """u2net if its weights are here (better hair), else the small u2netp from ../shared."""
    u2net = ROOT / ".models" / "u2net" / "u2net.onnx"
    if u2net.is_file():
        return U2NetPredictor.load(model_name="u2net", path=u2net, allow_download=False)
    u2netp = SHARED / "models" / "u2netp.onnx"
    return U2NetPredictor.load(model_name="u2netp", path=u2netp, allow_download=False)


def on_backdrop(rgba: np.ndarray) -> Image.Image:
    """The RGBA cut-out composed over the flat dark backdrop, as the styles do."""
    cut = Image.fromarray(rgba, "RGBA")
    return Image.alpha_composite(Image.new("RGBA", cut.size, (*BACKDROP, 255)), cut).convert("RGB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photo", type=Path, default=SHARED / "images" / "horse.jpg")
    parser.add_argument("--box", type=int, nargs=4, default=TAIL, metavar=("L", "T", "R", "B"))
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "samples")
    args = parser.parse_args()
    rgb = np.asarray(Image.open(args.photo).convert("RGB"))
    predictor = load_predictor()
    mask = predictor.predict([rgb])[0]
    args.out.mkdir(parents=True, exist_ok=True)
    left, top, right, bottom = args.box
    for edges in ("raw", "refined"):
        crop = on_backdrop(cutout(rgb, mask, edges=edges)).crop((left, top, right, bottom))
        crop = crop.resize((crop.width * ZOOM, crop.height * ZOOM), Image.Resampling.NEAREST)
        path = args.out / f"edges_{edges}.png"
        crop.save(path, optimize=True)
        print(f"{path} ({predictor.info.weights.name}, {crop.width}x{crop.height})")


if __name__ == "__main__":
    main()
