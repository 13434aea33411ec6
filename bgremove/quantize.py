"""``bgremove quantize``: make rembg's u2net run in INT8 on this machine, if its masks allow.

An operator step, run once per CPU type where the model runs (the INT8 model and its
report go beside the weights, e.g. on the model volume): crops of the given photos
calibrate, the whole photos are checked, and the INT8 model is written only when every
photo's mask stays within rembg's tolerance of the f32 one. The service, ``bgremove i``/
``p`` and batch jobs then time it against the other runtimes and keep the fastest
(``models.u2net_int8``, ``models.u2net``). The service makes the same model by itself
where it pays (``models.u2net_int8_build``); this command makes it ahead of time.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from bgremove.flags import add_u2net_home_flag
from imaging.formats import IMAGE_SUFFIXES
from models.errors import ModelError

if TYPE_CHECKING:  # numpy, Pillow and the INT8 tooling load when the command runs, not with
    # the command line (`bgremove --help` builds this subcommand's parser)
    import numpy as np

    from models.u2net_int8 import Int8Status

#: ``{max_mean_diff}`` and ``{max_off_percent}``: `models.u2net_int8`'s tolerance, filled in
#: when the help is printed (`_HelpFormatter`)
DESCRIPTION = """\
Quantize rembg's u2net to INT8 for this CPU (about 2x faster on a 2-core AVX2 EPYC),
keeping it only if every photo given stays within rembg's tolerance (mean |diff| <=
{max_mean_diff:g}, <= {max_off_percent:g}% of pixels off by more than 32). Give it photos
like the ones you will process (8 or more; about a minute on 2 cores), or none: the 8 check
photos the package ships, which the service's own background build uses. The INT8 model and
its report go beside the weights (U2NET_HOME), one per CPU type; without --images a model
already made and checked for this CPU is kept (an init step can run it at every start).
Exit status 0 when an INT8 model for this CPU is there, 2 otherwise.

examples:
  bgremove quantize --home /models/u2net          # ahead of time, e.g. in an image build
  bgremove quantize --images ~/photos/sample --force
"""


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """`DESCRIPTION` with the tolerance of `models.u2net_int8` (numpy, Pillow) filled in when
    the help is printed, not when the parser is built."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text == DESCRIPTION:
            from models.u2net_int8 import MAX_MEAN_DIFF, MAX_OFF_PERCENT

            text = text.format(max_mean_diff=MAX_MEAN_DIFF, max_off_percent=MAX_OFF_PERCENT)
        return super()._fill_text(text, width, indent)


def _recipe(name: str) -> str:
    """argparse type of ``--u2net-model``: a rembg file with an INT8 recipe, checked when the
    flag is given (argparse would read `choices` as soon as the parser is built)."""
    from models.u2net_int8 import RECIPES

    if name not in RECIPES:
        known = ", ".join(map(repr, sorted(RECIPES)))
        raise argparse.ArgumentTypeError(f"invalid choice: {name!r} (choose from {known})")
    return name


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``quantize``."""
    parser = subparsers.add_parser(
        "quantize",
        help="make an INT8 u2net for this CPU, kept only within rembg's tolerance",
        description=DESCRIPTION,
        formatter_class=_HelpFormatter,
    )
    parser.add_argument(
        "--images",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder of sample photos (default: the check photos the package ships, as the "
        "service's own build uses)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="make it again even when a checked INT8 model for this CPU is already there",
    )
    parser.add_argument(
        "--u2net-model",
        type=_recipe,
        default=None,
        metavar="NAME",
        help="rembg file to quantize, one with an INT8 recipe; default: "
        "BG_REMOVAL_U2NET_MODEL, else u2net",
    )
    add_u2net_home_flag(parser)
    parser.add_argument(
        "--calibration",
        type=int,
        default=None,
        metavar="N",
        help="calibration crops (default: the recipe's, 32)",
    )
    parser.set_defaults(func=run)


def _photos(folder: Path) -> list[tuple[str, np.ndarray]]:
    import numpy as np
    from PIL import Image, ImageOps, UnidentifiedImageError

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


def _already_made(name: str, status: Int8Status) -> int:
    """An init step runs this at every start: a model made and checked on this CPU (by an
    earlier run or by the service) is kept, and so is a refusal."""
    if status.state == "usable":
        print(f"{name}: INT8 model for this CPU already made and checked: {status.model}")
        print("(--force makes it again)", file=sys.stderr)
        return 0
    print(f"{name}: refused on this CPU before: {status.reason} (--force tries again)")
    return 2


def run(args: argparse.Namespace) -> int:
    """Quantize, print each photo's check; 0 when the INT8 model was written, else 2."""
    from bgremove.settings import cli_settings, u2net_home  # pydantic: not for --help
    from models.u2net_int8 import RECIPES, int8_status, quantize_u2net
    from models.u2net_int8_build import build_lock, shipped_photos
    from models.u2net_weights import resolve_u2net_weights

    settings = cli_settings()
    name = args.u2net_model or settings.u2net_model
    if name not in RECIPES:
        print(f"error: no INT8 recipe for {name!r} (only {sorted(RECIPES)})", file=sys.stderr)
        return 2
    home = u2net_home(settings, args.home)
    if args.images is None:
        photos = shipped_photos()
    else:
        photos = _photos(args.images) if args.images.is_dir() else []
    if not photos:
        print(f"error: no photos in {args.images}", file=sys.stderr)
        return 2
    try:
        weights = resolve_u2net_weights(name, home=home, allow_download=True)
        with build_lock(weights):  # a replica building it meanwhile finishes first
            status = int8_status(weights)
            if status.state in ("usable", "refused") and args.images is None and not args.force:
                return _already_made(name, status)
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
