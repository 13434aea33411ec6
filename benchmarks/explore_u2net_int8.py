"""Can U2-Net run in INT8 on this CPU and keep rembg's masks within tolerance?

On CPUs without native bf16 (AVX2 only) the f32 network is most of a request's time
(issue 9), so the remaining lever is INT8. This quantizes a U2-Net ONNX file with NNCF's
post-training quantization (OpenVINO backend), then prints, on this machine:

- model-only time at 320x320, f32 and INT8, interleaved rounds, best of `--repeats`;
- per photo (the shared photos at their own size and at 3000 px wide), the INT8 mask
  against the f32 mask the service makes today: mean |diff| and % of pixels off by more
  than 32 (rembg's tolerance: <= 1.0 and <= 0.5%), for INT8 alone and as served: the
  guard (`models.u2net_int8.GuardedInt8`) runs again in f32 an image whose INT8 map is
  soft over more than `--max-soft-share`. `--blur R` blurs every photo first (an unsure
  model: soft masks).

Calibration uses random crops (50-100% of a side, half flipped) of the photos, never the
whole photos the masks are checked on. `--ignore-side` keeps the first convolution and
the side-output convolutions (one output channel) in f32; `--max-drop` runs NNCF's
accuracy-control loop, which puts back in f32 the quantizers that hurt most until the
worst photo's tolerance score (max of MAD/1.0 and %off/0.5, at 320x320) is within it.
Needs `pip install nncf` (not a service dependency).

    python -m benchmarks.explore_u2net_int8 --model .models/u2net/u2net.onnx
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from imaging.formats import IMAGE_SUFFIXES
from models.hardware import cpu_description
from models.u2net_int8 import (
    RECIPES,
    GuardedInt8,
    calibration_inputs,
    compile_cpu,
    mask_tolerance,
    soft_share,
)
from models.u2net_transforms import postprocess, preprocess

SIZE = (320, 320)


def photos(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _rgb(paths: list[Path]) -> list[np.ndarray]:
    return [np.asarray(Image.open(p).convert("RGB")) for p in paths]


def score(mask: np.ndarray, reference: np.ndarray) -> float:
    """1.0 at the edge of rembg's tolerance; the larger of the two limits' shares."""
    mad, off = mask_tolerance(mask, reference)
    return max(mad / 1.0, off / 0.5)


def quantize(args: argparse.Namespace, core: Any, model: Any, paths: list[Path]) -> Any:
    import nncf

    calibration = nncf.Dataset(calibration_inputs(_rgb(paths), args.calibration, 0, SIZE))
    ignored = None
    if args.ignore_side:
        convs = [op for op in model.get_ordered_ops() if op.get_type_name() == "Convolution"]
        names = [convs[0].get_friendly_name()] + [
            op.get_friendly_name()
            for op in convs
            if op.get_input_partial_shape(1)[0].get_length() == 1
        ]
        ignored = nncf.IgnoredScope(names=names)
    options: dict[str, Any] = {
        "preset": nncf.QuantizationPreset.MIXED,
        "subset_size": args.calibration,
    }
    if ignored is not None:
        options["ignored_scope"] = ignored
    if args.max_drop is None:
        return nncf.quantize(model, calibration, **options)

    reference_model = compile_cpu(core, model, args.threads)
    checks = [preprocess(np.asarray(Image.open(p).convert("RGB")), SIZE)[None] for p in paths]
    references = [_mask320(reference_model(x)[0]) for x in checks]

    def validate(compiled: Any, data: Any) -> float:
        # 10 minus the worst photo's score: NNCF wants "higher is better" and a non-zero
        # metric for the f32 model (it divides by it)
        worst = 0.0
        for x in data:
            index = next(i for i, c in enumerate(checks) if c is x)
            worst = max(worst, score(_mask320(compiled(x)[0]), references[index]))
        return 10.0 - worst

    return nncf.quantize_with_accuracy_control(
        model,
        calibration,
        nncf.Dataset(checks),
        validation_fn=validate,
        max_drop=args.max_drop,
        drop_type=nncf.DropType.ABSOLUTE,
        **options,
    )


def _mask320(prediction: np.ndarray) -> np.ndarray:
    return postprocess(prediction[0, 0], SIZE, Image.Resampling.LANCZOS)


def best_ms(compiled: Any, x: np.ndarray, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        compiled(x)
        times.append(time.perf_counter() - start)
    return min(times) * 1000


def main() -> None:
    import openvino as ov

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="U2-Net ONNX file")
    parser.add_argument("--images", type=Path, default=Path("../shared/images"))
    parser.add_argument(
        "--calibration",
        type=int,
        default=RECIPES["u2net"].calibration,
        help="calibration crops (default: the recipe's)",
    )
    parser.add_argument("--ignore-side", action="store_true")
    parser.add_argument("--max-drop", type=float, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--save", type=Path, default=None, help="write the INT8 IR here (.xml)")
    parser.add_argument("--load", type=Path, default=None, help="check this INT8 IR instead")
    parser.add_argument(
        "--max-soft-share",
        type=float,
        default=RECIPES["u2net"].max_soft_share,
        help="the guard's threshold (share of the INT8 map that is soft)",
    )
    parser.add_argument("--blur", type=float, default=0.0, help="blur each photo (radius)")
    args = parser.parse_args()

    core = ov.Core()
    model = core.read_model(str(args.model))
    paths = photos(args.images)
    print(f"CPU: {cpu_description()}; {args.threads} threads; model {args.model.name}")
    if args.load:
        quantized = core.read_model(str(args.load))
    else:
        start = time.perf_counter()
        quantized = quantize(args, core, model, paths)
        print(f"quantization: {time.perf_counter() - start:.0f} s")
    if args.save:
        ov.save_model(quantized, str(args.save))

    f32, int8 = compile_cpu(core, model, args.threads), compile_cpu(core, quantized, args.threads)
    x = calibration_inputs(_rgb(paths), 1, 0, SIZE)[0]
    f32(x), int8(x)  # warm
    for round_ in range(args.rounds):
        a, b = best_ms(f32, x, args.repeats), best_ms(int8, x, args.repeats)
        print(f"round {round_ + 1}: f32 {a:.0f} ms, int8 {b:.0f} ms ({a / b:.2f}x)")

    guard = GuardedInt8(lambda x: int8(x)[0], lambda x: f32(x)[0], args.max_soft_share)
    print(
        "photo, size: soft share of the INT8 map; INT8 vs f32 mask (fast resize): mean |diff|,"
        f" % > 32; then as served, f32 where soft > {args.max_soft_share:.0%} (guard)"
    )
    worst = (0.0, 0.0)
    for path in paths:
        image = Image.open(path).convert("RGB")
        name = path.name
        if args.blur:
            image, name = image.filter(ImageFilter.GaussianBlur(args.blur)), f"{name}~blur"
        wide_size = (3000, round(image.height * 3000 / image.width))
        wide = image.resize(wide_size, Image.Resampling.LANCZOS)
        for case in (image, wide) if image.width != 3000 else (image,):
            rgb = np.asarray(case)
            reference = postprocess(
                f32(preprocess(rgb, SIZE)[None])[0][0, 0], case.size, Image.Resampling.LANCZOS
            )
            x = preprocess(rgb, SIZE, 3.0)[None]
            raw = int8(x)[0][0, 0]
            alone = mask_tolerance(postprocess(raw, case.size, Image.Resampling.BICUBIC), reference)
            redone = guard.redone
            served = postprocess(guard(x)[0, 0], case.size, Image.Resampling.BICUBIC)
            mad, off = mask_tolerance(served, reference)
            worst = (max(worst[0], mad), max(worst[1], off))
            flag = "" if mad <= 1.0 and off <= 0.5 else "  OUT"
            how = "f32" if guard.redone > redone else "int8"
            print(
                f"  {name} {case.size[0]}x{case.size[1]}: soft {soft_share(raw):.1%}; "
                f"{alone[0]:.3f}, {alone[1]:.3f}%; served ({how}) {mad:.3f}, {off:.3f}%{flag}"
            )
    print(f"worst as served: mean |diff| {worst[0]:.3f}, {worst[1]:.3f}% > 32 (limits 1.0, 0.5%)")


if __name__ == "__main__":
    main()
