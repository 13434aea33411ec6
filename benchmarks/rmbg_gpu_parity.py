"""Parity of our BiRefNet on a CUDA GPU with the original implementation's vectors.

The parity vectors (`../shared/birefnet/parity-*-256.npz`) were made by the
original code on the CPU in float32 with the synthetic weights of the tests.
CI has no GPU, so this script is how the CUDA path is checked: float32 with
PyTorch's defaults (cuDNN convolutions may use TF32 on Ampere and later),
float32 with TF32 off, and the autocast dtypes the service offers (bfloat16,
float16). Logit differences and mask differences on the 0-255 scale are printed.

    python -m benchmarks.rmbg_gpu_parity --vectors ../shared/birefnet
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from models.birefnet import BiRefNetConfig
from models.rmbg_weights import build_birefnet
from tests.support.birefnet_weights import synthetic_state_dict

REPO = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def tf32(enabled: bool | None) -> Iterator[None]:
    """None keeps PyTorch's defaults; True/False forces TF32 for matmuls and cuDNN."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    if enabled is not None:
        torch.backends.cuda.matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def masks(logits: torch.Tensor) -> np.ndarray:
    return (torch.sigmoid(logits.float()) * 255).round().to(torch.int16).cpu().numpy()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vectors", type=Path, default=REPO / ".." / "shared" / "birefnet")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--presets", default="birefnet-lite,rmbg-2.0")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"# rmbg_gpu_parity on {name}, torch {torch.__version__}")
    print(
        f"defaults: matmul.allow_tf32={torch.backends.cuda.matmul.allow_tf32}, "
        f"cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}"
    )
    print("| preset | mode | max abs logit diff | mean abs mask diff | max abs mask diff |")
    print("| --- | --- | --- | --- | --- |")
    modes: list[tuple[str, torch.dtype, bool | None]] = [
        ("float32, torch defaults", torch.float32, None),
        ("float32, TF32 off", torch.float32, False),
        ("float32, TF32 on", torch.float32, True),
        ("bfloat16 autocast", torch.bfloat16, None),
        ("float16 autocast", torch.float16, None),
    ]
    for preset in args.presets.split(","):
        vectors = np.load(args.vectors / f"parity-{preset}-256.npz")
        model = build_birefnet(synthetic_state_dict(preset), BiRefNetConfig.preset(preset))
        model = model.eval().to(device)
        x = torch.from_numpy(vectors["input"]).to(device)
        ref = torch.from_numpy(vectors["logits"])
        ref_mask = masks(ref)
        for label, dtype, use_tf32 in modes:
            with (
                tf32(use_tf32),
                torch.inference_mode(),
                torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32),
            ):
                out = model(x).float().cpu()
            if not torch.isfinite(out).all():
                print(f"| {preset} | {label} | NON-FINITE OUTPUT | | |")
                continue
            diff = (out - ref).abs().max().item()
            mdiff = np.abs(masks(out) - ref_mask)
            print(
                f"| {preset} | {label} | {diff:.2e} | {mdiff.mean():.3f} | {int(mdiff.max())} |",
                flush=True,
            )
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
