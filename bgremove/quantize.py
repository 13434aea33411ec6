"""``bgremove quantize``: make rembg's u2net run in INT8 on this machine, if its masks allow.

An operator step, run once per CPU type where the model runs (the INT8 model and its
report go beside the weights, e.g. on the model volume): crops of the given photos
calibrate, the whole photos are checked, and the INT8 model is written only when every
photo's mask stays within rembg's tolerance of the f32 one. The service, ``bgremove i``/
``p`` and batch jobs then time it against the other runtimes and keep the fastest
(``models.u2net_int8``, ``models.u2net``). Needs ``nncf`` (``pip install nncf``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from bgremove.flags import add_u2net_home_flag
from bgremove.folder import IMAGE_SUFFIXES
from bgremove.local import cli_settings, u2net_home
from models.errors import ModelError
from models.u2net_int8 import MAX_MEAN_DIFF, MAX_OFF_PERCENT, RECIPES, quantize_u2net
from models.u2net_weights import resolve_u2net_weights

DESCRIPTION = f"""\
Quantize rembg's u2net to INT8 for this CPU (about 2x faster on a 2-core AVX2 EPYC),
keeping it only if every photo given stays within rembg's tolerance (mean |diff| <=
{MAX_MEAN_DIFF:g}, <= {MAX_OFF_PERCENT:g}% of pixels off by more than 32). Give it photos
like the ones you will process (8 or more; several minutes on 2 cores). The INT8 model and
its report go beside the weights (U2NET_HOME); run it again on each CPU type. Exit status 0
when the INT8 model was written, 2 otherwise. Needs nncf (pip install nncf).

examples:
  bgremove quantize --images ~/photos/sample
  bgremove quantize --images /data/calibration --home /models/u2net
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``quantize``."""
    parser = subparsers.add_parser(
        "quantize",
        help="make an INT8 u2net for this CPU, kept only within rembg's tolerance",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--images", type=Path, required=True, metavar="DIR", help="folder of sample photos"
    )
    parser.add_argument(
        "--u2net-model",
        choices=sorted(RECIPES),
        default=None,
        help="rembg file to quantize; default: BG_REMOVAL_U2NET_MODEL, else u2net",
    )
    add_u2net_home_flag(parser)
    parser.add_argument(
        "--calibration",
        type=int,
        default=None,
        metavar="N",
        help="calibration crops (default: the recipe's, 64)",
    )
    parser.set_defaults(func=run)


def _photos(folder: Path) -> list[tuple[str, np.ndarray]]:
    photos = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        try:
            with Image.open(path) as image:
                rgb = ImageOps.exif_transpose(image).convert("RGB")
        except (OSError, UnidentifiedImageError) as exc:
            print(f"skipped {path.name}: {exc}", file=sys.stderr)
            continue
        photos.append((path.name, np.asarray(rgb)))
    return photos


def run(args: argparse.Namespace) -> int:
    """Quantize, print each photo's check; 0 when the INT8 model was written, else 2."""
    settings = cli_settings()
    name = args.u2net_model or settings.u2net_model
    if name not in RECIPES:
        print(f"error: no INT8 recipe for {name!r} (only {sorted(RECIPES)})", file=sys.stderr)
        return 2
    home = u2net_home(settings, args.home)
    photos = _photos(args.images) if args.images.is_dir() else []
    if not photos:
        print(f"error: no photos in {args.images}", file=sys.stderr)
        return 2
    try:
        weights = resolve_u2net_weights(name, home=home, allow_download=True)
        print(f"quantizing {weights.path} on {len(photos)} photo(s)...", file=sys.stderr)
        report = quantize_u2net(weights, photos, calibration=args.calibration)
    except ModelError as exc:
        print(f"error [{exc.code}] {name}: {exc}", file=sys.stderr)
        return 2
    for check in report.photos:
        mark = "ok " if check.within else "OUT"
        redone = " (soft mask: served in f32)" if check.redone else ""
        print(
            f"{mark} {check.name} {check.size[0]}x{check.size[1]}: mean |diff| "
            f"{check.mean_diff:.3f}, {check.off_percent:.3f}% off by > 32{redone}"
        )
    if not report.within_tolerance:
        print(f"{name}: out of tolerance on this CPU; no INT8 model written", file=sys.stderr)
        return 2
    print(f"{name}: INT8 model written beside {weights.path} ({report.cpu})")
    return 0
