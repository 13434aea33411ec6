"""RMBG-2.0 against U2-Net on your photos: the migration guide's quick test and comparison.

``scripts/test_rmbg2_quick.py`` and ``scripts/benchmark_comparison.py`` call `quick_test`
and `comparison` here. Both load each model as ``bgremove`` and the service do (the
``BG_REMOVAL_*`` settings and ``.env``: weights, runtime, tuning cache) and cut photos out
through the one pipeline, so what they show is what the service returns. A model that
cannot load is reported with its typed reason, never replaced by something pretending to
be it: without RMBG-2.0 weights U2-Net runs alone and the tools exit 0 for what ran, or 1
with ``--require-rmbg``.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from bgremove.errors import SetupError
from bgremove.local import LocalMasker, load_masker
from bgremove.settings import cli_settings
from imaging import mask_metrics
from imaging.formats import IMAGE_SUFFIXES
from imaging.limits import Limits
from imaging.options import RenderOptions
from imaging.pipeline import MaskOutcome, remove_background
from models.registry import RMBG, U2NET, get_tier
from models.settings import RemovalSettings

#: the models compared, in the order of every table and grid column
MODELS = (RMBG, U2NET)
DEFAULT_OUT = Path("test_results")
#: the test photos next to a checkout (the README's examples use them too)
DEFAULT_PHOTOS = Path("..") / "shared" / "images"
#: the quick test's photo when none is given: shipped with the repository
DEFAULT_PHOTO = Path(__file__).resolve().parents[1] / "docs" / "samples" / "horse.jpg"
CELL = 320


@dataclass
class Loaded:
    """A model ready to cut out, or why it is not."""

    name: str
    masker: LocalMasker | None
    reason: str | None
    load_s: float

    @property
    def label(self) -> str:
        return get_tier(self.name).label


@dataclass
class Cut:
    """One photo through one model: the cut-out PNG, its mask and what it cost."""

    png: bytes
    mask: np.ndarray
    total_ms: float
    mask_ms: float
    model: str

    def figures(self) -> str:
        return (
            f"{self.total_ms:.0f} ms (model {self.mask_ms:.0f} ms), foreground "
            f"{mask_metrics.foreground_share(self.mask):.1%}, soft edge "
            f"{mask_metrics.soft_share(self.mask):.1%}"
        )


class _KeepMask:
    """A masker that keeps the last mask it gave the pipeline, for the figures."""

    def __init__(self, masker: LocalMasker) -> None:
        self.masker = masker
        self.mask: np.ndarray | None = None

    def __call__(self, rgb: np.ndarray) -> MaskOutcome:
        outcome = self.masker(rgb)
        self.mask = outcome.mask
        return outcome


def load_models(settings: RemovalSettings) -> dict[str, Loaded]:
    """Both tiers from ``settings`` (`bgremove`'s: `cli_settings`); U2-Net must load."""
    loaded: dict[str, Loaded] = {}
    for name in MODELS:
        started = time.perf_counter()
        try:
            masker: LocalMasker | None = load_masker(settings.model_copy(update={"model": name}))
            reason = None
        except SetupError as exc:
            if name == U2NET:
                raise
            masker, reason = None, str(exc)
        loaded[name] = Loaded(name, masker, reason, time.perf_counter() - started)
    return loaded


def cut_out(data: bytes, masker: LocalMasker, limits: Limits) -> Cut:
    """A plain cut-out of ``data`` through the pipeline, and its mask."""
    keep = _KeepMask(masker)
    started = time.perf_counter()
    result = remove_background(data, RenderOptions(), keep, limits=limits)
    assert keep.mask is not None
    total_ms = (time.perf_counter() - started) * 1000
    return Cut(result.body, keep.mask, total_ms, result.timings_ms["mask"], result.model)


def report_loading(models: dict[str, Loaded]) -> None:
    for run in models.values():
        if run.masker is not None:
            print(f"{run.label}: loaded in {run.load_s:.1f} s")
        else:
            print(f"{run.label}: not available {run.reason}; going on without it")


def _parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--require-rmbg",
        action="store_true",
        help="exit 1 when RMBG-2.0 cannot load, instead of going on with U2-Net alone",
    )
    return parser


def _exit_status(models: dict[str, Loaded], require_rmbg: bool) -> int:
    if models[RMBG].masker is None and require_rmbg:
        print(f"--require-rmbg: {models[RMBG].label} did not load")
        return 1
    return 0


def quick_test(argv: Sequence[str] | None = None) -> int:
    """`python scripts/test_rmbg2_quick.py [PHOTO]`: one photo through both models."""
    parser = _parser("Load RMBG-2.0 (and U2-Net), cut one photo out, print the figures.")
    parser.add_argument("photo", nargs="?", type=Path, default=DEFAULT_PHOTO)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where results go")
    args = parser.parse_args(argv)
    data = args.photo.read_bytes()
    settings = cli_settings()
    models = load_models(settings)
    report_loading(models)
    limits = settings.limits()
    args.out.mkdir(parents=True, exist_ok=True)
    cuts: dict[str, Cut] = {}
    for name, run in models.items():
        if run.masker is None:
            continue
        cuts[name] = cut_out(data, run.masker, limits)
        path = args.out / f"{args.photo.stem}_{name}.png"
        path.write_bytes(cuts[name].png)
        print(f"{run.label}: {cuts[name].figures()} -> {path}")
    if len(cuts) == len(MODELS):
        print(f"agreement: {mask_metrics.Agreement.of(cuts[RMBG].mask, cuts[U2NET].mask)}")
    return _exit_status(models, args.require_rmbg)


@dataclass
class PhotoRow:
    """One photo of the comparison: each model's time, the agreement, ground-truth scores."""

    name: str
    size: tuple[int, int]
    ms: dict[str, float] = field(default_factory=dict)
    agreement: mask_metrics.Agreement | None = None
    #: model -> {"mae", "iou", "max_f"} against the ground-truth mask
    scores: dict[str, dict[str, float]] = field(default_factory=dict)


def _photos(folder: Path, count: int) -> list[Path]:
    if not folder.is_dir():
        raise SystemExit(f"no folder {folder}: give one of photos (FOLDER)")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:count]
    if not paths:
        raise SystemExit(f"no images in {folder}")
    return paths


def _truth(folder: Path | None, stem: str, size: tuple[int, int]) -> np.ndarray | None:
    """The ground-truth mask of photo ``stem`` (same stem, any image type), at its size."""
    if folder is None:
        return None
    found = [p for p in sorted(folder.glob(f"{stem}.*")) if p.suffix.lower() in IMAGE_SUFFIXES]
    if not found:
        print(f"  no ground truth for {stem} in {folder}")
        return None
    with Image.open(found[0]) as image:
        grey = image.convert("L")
        if grey.size != size:
            grey = grey.resize(size, Image.Resampling.BILINEAR)
        return np.asarray(grey)


def _scores(mask: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    return {
        "mae": mask_metrics.mae(mask, truth),
        "iou": mask_metrics.iou(mask, truth),
        "max_f": mask_metrics.max_f_measure(mask, truth),
    }


def _tile(image: Image.Image, label: str) -> Image.Image:
    """``image`` fitted into a CELL-square tile (transparency over a checkerboard), labelled."""
    tile = _checkerboard() if image.mode == "RGBA" else Image.new("RGB", (CELL, CELL), "white")
    fitted = ImageOps.contain(image, (CELL, CELL - 20))
    offset = ((CELL - fitted.width) // 2, 20 + (CELL - 20 - fitted.height) // 2)
    tile.paste(fitted, offset, fitted if fitted.mode == "RGBA" else None)
    ImageDraw.Draw(tile).text((4, 4), label, fill=(0, 0, 0))
    return tile


def _note(text: str) -> Image.Image:
    tile = Image.new("RGB", (CELL, CELL), (245, 245, 245))
    draw = ImageDraw.Draw(tile)
    for i in range(0, len(text), 44):
        draw.text((6, 6 + 14 * (i // 44)), text[i : i + 44], fill=(120, 0, 0))
    return tile


def _checkerboard(square: int = 16) -> Image.Image:
    yy, xx = np.mgrid[0:CELL, 0:CELL]
    board = np.where(((yy // square) + (xx // square)) % 2 == 0, 235, 200).astype(np.uint8)
    return Image.fromarray(board).convert("RGB")


def _side_by_side(tiles: Sequence[Image.Image]) -> Image.Image:
    strip = Image.new("RGB", (CELL * len(tiles), CELL), "white")
    for i, tile in enumerate(tiles):
        strip.paste(tile, (i * CELL, 0))
    return strip


def _table(rows: Sequence[PhotoRow], models: dict[str, Loaded]) -> str:
    """The statistics as Markdown: per photo and the mean of each column."""
    ran = [name for name, run in models.items() if run.masker is not None]
    scored = sorted({name for row in rows for name in row.scores})
    head = ["photo", "size", *(f"{models[n].label} ms" for n in ran)]
    if len(ran) == len(MODELS):
        head += ["mean abs diff /255", "IoU of the two"]
    for name in scored:
        head += [f"{models[name].label} {m}" for m in ("MAE", "IoU", "maxF")]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    columns: list[list[float]] = []
    for row in rows:
        values = [row.ms[n] for n in ran]
        if row.agreement is not None:
            values += [row.agreement.mean_abs_diff, row.agreement.iou]
        for name in scored:
            score = row.scores.get(name)
            values += [score[k] for k in ("mae", "iou", "max_f")] if score else [float("nan")] * 3
        columns.append(values)
        cells = [f"{v:.0f}" if i < len(ran) else f"{v:.3f}" for i, v in enumerate(values)]
        lines.append(f"| {row.name} | {row.size[0]}x{row.size[1]} | " + " | ".join(cells) + " |")
    means = np.nanmean(np.array(columns), axis=0)
    cells = [f"{v:.0f}" if i < len(ran) else f"{v:.3f}" for i, v in enumerate(means)]
    lines.append("| mean | | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def comparison(argv: Sequence[str] | None = None) -> int:
    """`python scripts/benchmark_comparison.py [FOLDER]`: photos through both models, side by
    side, with a statistics table (and MAE, IoU, maxF against ``--ground-truth`` masks)."""
    parser = _parser("RMBG-2.0 against U2-Net on a folder of photos, side by side.")
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT_PHOTOS)
    parser.add_argument("--count", type=int, default=5, help="photos to take (sorted by name)")
    parser.add_argument(
        "--ground-truth",
        type=Path,
        metavar="DIR",
        help="ground-truth masks with the photos' file stems: adds MAE, IoU and maxF",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT / "benchmark_comparison")
    args = parser.parse_args(argv)
    photos = _photos(args.folder, args.count)
    settings = cli_settings()
    models = load_models(settings)
    report_loading(models)
    limits = settings.limits()
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[PhotoRow] = []
    strips: list[Image.Image] = []
    for path in photos:
        data = path.read_bytes()
        with Image.open(path) as image:
            original = ImageOps.exif_transpose(image).convert("RGB")
        row = PhotoRow(path.name, original.size)
        truth = _truth(args.ground_truth, path.stem, original.size)
        tiles = [_tile(original, f"{path.name} {original.width}x{original.height}")]
        cuts: dict[str, Cut] = {}
        for name, run in models.items():
            if run.masker is None:
                tiles.append(_note(f"{run.label} {run.reason}"))
                continue
            cuts[name] = cut = cut_out(data, run.masker, limits)
            row.ms[name] = cut.total_ms
            (args.out / f"{path.stem}_{name}.png").write_bytes(cut.png)
            cutout = Image.open(io.BytesIO(cut.png))
            tiles.append(_tile(cutout, f"{run.label} {cut.total_ms:.0f} ms"))
            if truth is not None:
                row.scores[name] = _scores(cut.mask, truth)
        if len(cuts) == len(MODELS):
            row.agreement = mask_metrics.Agreement.of(cuts[RMBG].mask, cuts[U2NET].mask)
        strip = _side_by_side(tiles)
        strip.save(args.out / f"{path.stem}_comparison.png")
        strips.append(strip)
        rows.append(row)
        print(f"{path.name}: " + ", ".join(f"{n} {ms:.0f} ms" for n, ms in row.ms.items()))
    grid = Image.new("RGB", (CELL * (1 + len(MODELS)), CELL * len(strips)), "white")
    for i, strip in enumerate(strips):
        grid.paste(strip, (0, i * CELL))
    grid.save(args.out / "grid.png")
    table = _table(rows, models)
    (args.out / "statistics.md").write_text(table)
    (args.out / "statistics.json").write_text(json.dumps(_as_json(rows, models), indent=2))
    print(table)
    print(f"saved {args.out}/: grid.png, <photo>_comparison.png, statistics.md, statistics.json")
    return _exit_status(models, args.require_rmbg)


def _as_json(rows: Sequence[PhotoRow], models: dict[str, Loaded]) -> dict[str, object]:
    return {
        "models": {
            name: {"loaded": run.masker is not None, "reason": run.reason, "load_s": run.load_s}
            for name, run in models.items()
        },
        "photos": [
            {
                "photo": row.name,
                "size": list(row.size),
                "ms": row.ms,
                "agreement": None
                if row.agreement is None
                else {"mean_abs_diff": row.agreement.mean_abs_diff, "iou": row.agreement.iou},
                "scores": row.scores,
            }
            for row in rows
        ],
    }
