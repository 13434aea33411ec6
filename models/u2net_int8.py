"""U2-Net in INT8: made once where it will run (by the tier itself, `models.u2net_int8_build`,
or ahead of time by `bgremove quantize`), kept only within rembg's tolerance.

Why: on CPUs without native bf16 (AVX2 only) the f32 network is most of every U2-Net
request. INT8 ran rembg's ``u2net`` 1.9-2.1x faster than f32 on a 2-core AVX2 AMD EPYC
with every shared photo within tolerance, but only with 4 of its 168 convolutions left in
f32 (found by NNCF's accuracy-control loop; with all of them INT8 every photo was out:
docs/benchmarks.md, `benchmarks/explore_u2net_int8.py`). ``u2netp`` in INT8 is far out of
tolerance, so only ``u2net`` has a recipe.

INT8 kernels differ by instruction set, so the tolerance is checked where the model will
run and the report records the CPU: the runtime choice (``models.u2net``) offers INT8 only
for the weights it was made from, on a CPU with the same feature flags, while the file is
the one that was checked. Quantizing needs ``nncf`` (a dependency of the project); serving
the result needs only OpenVINO.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from models.errors import Int8UnavailableError
from models.files import publish, staged_directory, write_atomic
from models.hardware import cpu_name, usable_cpus
from models.u2net_transforms import postprocess, preprocess, resize_filters
from models.u2net_tuning import cpu_flags_digest, openvino_cpu_config, package_version
from models.u2net_weights import U2NetWeights, model_spec

log = logging.getLogger("models.u2net")

#: rembg's tolerance, per photo: mean |diff| (0-255) and share of pixels off by > 32
MAX_MEAN_DIFF = 1.0
MAX_OFF_PERCENT = 0.5
#: layout of the report file; bump it and older reports are ignored
REPORT_SCHEMA = 2


@dataclass(frozen=True)
class Int8Recipe:
    """How one model file is quantized: which convolutions stay f32, how it is calibrated."""

    #: OpenVINO friendly names of the operations left in f32
    float_ops: tuple[str, ...]
    #: calibration inputs: random 50-100% crops of the photos, half flipped. Collecting
    #: their statistics is most of a build (one f32 run each); 32 crops kept every shipped
    #: and held-out photo as close to f32 as 64 did, on AVX-512 VNNI and on AVX2 INT8
    #: kernels, in 0.6x the time (docs/benchmarks.md)
    calibration: int = 32
    seed: int = 0
    #: images whose INT8 mask is soft (see `soft_share`) over more than this share are
    #: run again in f32: on 16 unblurred photos INT8's error sat where the mask is soft,
    #: 8-15/255 per soft pixel (docs/benchmarks.md), so above ~6% a photo could leave
    #: rembg's tolerance (a cat's fur: 22% soft, mean |diff| 3.0) while typical photos
    #: (1-5.5%) keep INT8's speed. A heuristic, not a bound: blurred photos break it
    max_soft_share: float = 0.06


#: by rembg model name; applies to rembg's own file only (checked by MD5)
RECIPES: dict[str, Int8Recipe] = {
    "u2net": Int8Recipe(
        float_ops=(
            "Conv_685/WithoutBiases",
            "Conv_787/WithoutBiases",
            "Conv_818/WithoutBiases",
            "Conv_920/WithoutBiases",
        )
    ),
}


#: mask values (0-255, after rembg's min-max scaling) between these are "soft"
SOFT_RANGE = (16, 239)


def soft_share(prediction: np.ndarray) -> float:
    """Share of a raw U2-Net map (H, W) that is neither background nor foreground once
    scaled as rembg scales it (min to 0, max to 255)."""
    low, high = float(prediction.min()), float(prediction.max())
    if not high > low:
        return 0.0
    scaled = (prediction - low) * (255.0 / (high - low))
    return float(((scaled > SOFT_RANGE[0]) & (scaled < SOFT_RANGE[1])).mean())


class GuardedInt8:
    """Runs INT8 and runs again in f32 each image whose INT8 mask is too soft to trust.

    A soft mask (fur, hair, haze, an unsure model) is where INT8's small shifts add up to
    more than rembg's tolerance; sharp masks hide them. Counts what it redid, for health.
    """

    def __init__(
        self,
        int8_run: Callable[[np.ndarray], np.ndarray],
        f32_run: Callable[[np.ndarray], np.ndarray],
        max_soft_share: float,
    ) -> None:
        self._int8, self._f32, self.max_soft_share = int8_run, f32_run, max_soft_share
        self.images = 0
        self.redone = 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = self._int8(x)
        soft = [i for i in range(out.shape[0]) if soft_share(out[i, 0]) > self.max_soft_share]
        self.images += out.shape[0]
        if soft:
            out = np.array(out)  # a runtime's output may be a view of its own buffer
            for i in soft:  # one at a time: the f32 graph may have a static batch of 1
                out[i] = self._f32(x[i : i + 1])[0]
            self.redone += len(soft)
        return out


@dataclass(frozen=True)
class PhotoCheck:
    """One check photo: the served mask (INT8, or f32 where the guard redid it) against
    the f32 one, at the photo's own size."""

    name: str
    size: tuple[int, int]
    mean_diff: float
    off_percent: float
    #: the INT8 mask was soft and the photo went through f32 (`GuardedInt8`)
    redone: bool = False

    @property
    def within(self) -> bool:
        return self.mean_diff <= MAX_MEAN_DIFF and self.off_percent <= MAX_OFF_PERCENT


@dataclass
class Int8Report:
    """What was made, from what, where, and how its masks compared."""

    model: str
    source_md5: str
    recipe: dict[str, Any]
    cpu: str
    cpu_flags_sha256: str | None
    versions: dict[str, str | None]
    photos: list[PhotoCheck]
    ir_sha256: str | None = None
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    schema: int = REPORT_SCHEMA

    @property
    def within_tolerance(self) -> bool:
        return bool(self.photos) and all(p.within for p in self.photos)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["within_tolerance"] = self.within_tolerance
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Int8Report:
        values = {k: v for k, v in data.items() if k != "within_tolerance"}
        values["photos"] = [
            PhotoCheck(p["name"], tuple(p["size"]), p["mean_diff"], p["off_percent"], p["redone"])
            for p in values["photos"]
        ]
        return cls(**values)


def int8_files(weights: U2NetWeights, flags_digest: str | None = None) -> tuple[Path, Path]:
    """Where the INT8 model (IR ``.xml``, with its ``.bin``) and its report live: beside the
    weights, so a model volume carries them to every replica, one pair per CPU feature-flag
    set (INT8 kernels differ by instruction set), so that a volume shared by several CPU
    types holds each one's own. ``flags_digest``: this CPU's (`cpu_flags_digest`) if None."""
    digest = flags_digest or cpu_flags_digest() or "unknown-cpu"
    stem = f"{weights.path.stem}.int8-{digest[:12]}"
    return weights.path.with_name(f"{stem}.xml"), weights.path.with_name(f"{stem}.json")


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def recipe_for(weights: U2NetWeights) -> Int8Recipe:
    recipe = RECIPES.get(weights.name)
    if recipe is None:
        raise Int8UnavailableError(
            f"no INT8 recipe for {weights.name!r}: only {sorted(RECIPES)} stay within "
            "rembg's tolerance in INT8 (u2netp is far out)"
        )
    if weights.source == "path" or weights.md5 != model_spec(weights.name).md5:
        raise Int8UnavailableError(
            f"{weights.path} is not rembg's {weights.name} file (MD5): the recipe's f32 "
            "layers were found on that file only"
        )
    return recipe


#: `usable`: offer it; `missing`/`stale`: (re)build it; `refused`: built here and out of
#: tolerance, do not build again; `unavailable`: no recipe for these weights
Int8State = Literal["usable", "missing", "stale", "refused", "unavailable"]


@dataclass(frozen=True)
class Int8Status:
    """What the models directory holds for these weights on this CPU, and what to do."""

    state: Int8State
    reason: str = ""
    model: Path | None = None


def int8_status(weights: U2NetWeights) -> Int8Status:
    """Whether an INT8 model for these weights can serve on this CPU, and if not, why.

    A report that is out of tolerance stays refused while the weights, the CPU and the
    quantizing tools are the ones it was made with: building again would refuse again.
    """
    try:
        recipe_for(weights)
    except Int8UnavailableError as exc:
        return Int8Status("unavailable", str(exc))
    xml, report_path = int8_files(weights)
    if not report_path.is_file():
        return Int8Status("missing", f"no INT8 model for this CPU beside {weights.path.name}")
    try:
        report = Int8Report.from_dict(json.loads(report_path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return Int8Status("stale", f"{report_path.name} is unreadable ({exc})")
    if report.schema != REPORT_SCHEMA:
        return Int8Status("stale", f"{report_path.name} is from an older version")
    if report.source_md5 != weights.md5:
        return Int8Status("stale", f"{report_path.name} was made from other weights")
    if report.cpu_flags_sha256 != cpu_flags_digest():
        # INT8 kernels differ by instruction set
        return Int8Status("stale", f"{report_path.name} was checked on another CPU ({report.cpu})")
    if not report.within_tolerance:
        if report.versions != _tool_versions():
            return Int8Status("stale", f"{report_path.name} was refused by other tool versions")
        out = [p for p in report.photos if not p.within]
        worst = max(p.mean_diff for p in report.photos) if report.photos else 0.0
        return Int8Status(
            "refused",
            f"masks out of rembg's tolerance on {len(out)} of {len(report.photos)} check "
            f"photos on this CPU (worst mean |diff| {worst:.2f})",
        )
    if not xml.is_file() or report.ir_sha256 != _sha256(xml.with_suffix(".bin")):
        checked = xml.with_suffix(".bin").name
        return Int8Status("stale", f"{checked} is not the file that was checked")
    return Int8Status("usable", "", xml)


def usable_int8(weights: U2NetWeights) -> tuple[Path | None, str]:
    """The INT8 model to offer for these weights on this machine, or None and why not."""
    status = int8_status(weights)
    if status.state == "usable":
        return status.model, ""
    if status.state in ("missing", "stale"):
        return None, f"{status.reason}: make one with `bgremove quantize`"
    return None, status.reason


def _tool_versions() -> dict[str, str | None]:
    return {name: package_version(name) for name in ("nncf", "openvino")}


def calibration_inputs(
    images: Sequence[np.ndarray], count: int, seed: int, size: tuple[int, int]
) -> list[np.ndarray]:
    """Model inputs from random crops (50-100% of each side, half flipped) of the photos."""
    rng = np.random.default_rng(seed)
    inputs = []
    for i in range(count):
        image = Image.fromarray(images[i % len(images)])
        width, height = image.size
        scale = rng.uniform(0.5, 1.0)
        cw, ch = max(1, int(width * scale)), max(1, int(height * scale))
        x0, y0 = int(rng.integers(0, width - cw + 1)), int(rng.integers(0, height - ch + 1))
        crop = image.crop((x0, y0, x0 + cw, y0 + ch))
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        inputs.append(preprocess(np.asarray(crop), size)[None])
    return inputs


def compile_cpu(core: Any, model: Any, threads: int) -> Any:
    """``model`` compiled as the service runs U2-Net (f32 where not quantized)."""
    return core.compile_model(model, "CPU", openvino_cpu_config(threads, "f32"))


def mask_tolerance(mask: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(mean |diff|, % of pixels off by more than 32) of two uint8 masks."""
    diff = np.abs(mask.astype(np.int16) - reference.astype(np.int16))
    return float(diff.mean()), float((diff > 32).mean() * 100)


def quantize_u2net(
    weights: U2NetWeights,
    photos: Sequence[tuple[str, np.ndarray]],
    *,
    threads: int | None = None,
    calibration: int | None = None,
) -> Int8Report:
    """Quantize rembg's file by its recipe, check every photo, write the model if all pass.

    ``photos`` are (name, RGB uint8 array): crops of them calibrate, the whole photos are
    checked (INT8 with the service's fast resizing against f32 with rembg's exact one).
    The report is written either way; the INT8 model only when every photo is within
    tolerance (an older one is removed otherwise, so it is never offered).
    """
    recipe = recipe_for(weights)
    if not photos:
        raise ValueError("quantize needs at least one photo")
    try:
        import nncf
        import openvino as ov
    except ImportError as exc:
        raise Int8UnavailableError(
            f"quantizing needs nncf and openvino ({exc}): reinstall the project "
            "(both are its dependencies)"
        ) from exc
    threads = threads or usable_cpus()
    core = ov.Core()
    model = core.read_model(str(weights.path))
    shape = model.inputs[0].get_partial_shape()
    size = (shape[3].get_length(), shape[2].get_length())
    arrays = [array for _, array in photos]
    inputs = calibration_inputs(arrays, calibration or recipe.calibration, recipe.seed, size)
    quantized = nncf.quantize(
        model,
        nncf.Dataset(inputs),
        preset=nncf.QuantizationPreset.MIXED,
        subset_size=len(inputs),
        ignored_scope=nncf.IgnoredScope(names=list(recipe.float_ops)),
    )
    f32, int8 = compile_cpu(core, model, threads), compile_cpu(core, quantized, threads)
    served = GuardedInt8(lambda x: int8(x)[0], lambda x: f32(x)[0], recipe.max_soft_share)
    gap, upscale = resize_filters("fast")
    checks = []
    for name, rgb in photos:
        height, width = rgb.shape[:2]
        reference = postprocess(
            f32(preprocess(rgb, size)[None])[0][0, 0], (width, height), Image.Resampling.LANCZOS
        )
        redone = served.redone
        mask = postprocess(served(preprocess(rgb, size, gap)[None])[0, 0], (width, height), upscale)
        mean_diff, off_percent = mask_tolerance(mask, reference)
        checks.append(
            PhotoCheck(
                name,
                (width, height),
                round(mean_diff, 4),
                round(off_percent, 4),
                served.redone > redone,
            )
        )
    report = Int8Report(
        model=weights.name,
        source_md5=str(weights.md5),
        recipe={**asdict(recipe), "calibration": len(inputs)},
        cpu=cpu_name(),
        cpu_flags_sha256=cpu_flags_digest(),
        versions=_tool_versions(),
        photos=checks,
    )
    xml, report_path = int8_files(weights)
    if report.within_tolerance:
        with staged_directory(xml) as tmp:
            staged = tmp / xml.name
            ov.save_model(quantized, str(staged))
            report.ir_sha256 = _sha256(staged.with_suffix(".bin"))
            publish(staged.with_suffix(".bin"), xml.with_suffix(".bin"))
            publish(staged, xml)
    else:
        for stale in (xml, xml.with_suffix(".bin")):
            stale.unlink(missing_ok=True)
    # every replica reads it at start (`usable_int8`): never half of one
    write_atomic(report_path, json.dumps(report.as_dict(), indent=2) + "\n")
    log.info(
        "INT8 %s: %s; worst mean |diff| %.3f, worst %% > 32 %.3f; report %s",
        weights.name,
        "within tolerance" if report.within_tolerance else "OUT of tolerance, not written",
        max(p.mean_diff for p in checks),
        max(p.off_percent for p in checks),
        report_path,
    )
    return report
