"""Model loading shared by the in-process benchmarks: RMBG-2.0 if it loads, U2-Net always.

Like the service, a model that cannot load is reported with its typed reason,
never replaced by something that pretends to be it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from deployments.model_replica import MaskPredictor
from models.errors import ModelError

ROOT = Path(__file__).resolve().parents[1]


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rmbg-path", help="RMBG-2.0 checkpoint dir or .safetensors (else hub)")
    parser.add_argument("--rmbg-arch", default="rmbg-2.0")
    parser.add_argument("--resolution", type=int, default=1024)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument(
        "--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"]
    )
    parser.add_argument("--u2net-model", default="u2net")
    parser.add_argument("--u2net-path", help="your own U2-Net ONNX file")
    parser.add_argument("--u2net-home", help="rembg's model dir (default $U2NET_HOME or ~/.u2net)")


def load_rmbg(args: argparse.Namespace) -> tuple[MaskPredictor | None, str, float]:
    """(predictor or None, description or reason, load seconds)."""
    from models.rmbg import RMBGPredictor

    start = time.perf_counter()
    try:
        predictor = RMBGPredictor.from_source(
            args.rmbg_path or "briaai/RMBG-2.0",
            arch=args.rmbg_arch,
            resolution=args.resolution,
            device=args.device,
            dtype=args.dtype,
        )
        predictor.warmup(1)
    except ModelError as exc:
        return None, f"unavailable ({exc.code}): {exc}", time.perf_counter() - start
    dtype = str(predictor.dtype).removeprefix("torch.")
    desc = f"RMBG-2.0 {args.rmbg_arch} @{args.resolution} on {predictor.device} {dtype}"
    return predictor, desc, time.perf_counter() - start


def load_u2net(args: argparse.Namespace) -> tuple[MaskPredictor, str, float]:
    from models.u2net import U2NetPredictor

    start = time.perf_counter()
    predictor = U2NetPredictor.load(
        model_name=args.u2net_model, path=args.u2net_path, home=args.u2net_home
    )
    info = predictor.info
    desc = (
        f"U2-Net {info.weights.name} ({info.weights.source}: {info.weights.path}), {info.runtime}"
    )
    return predictor, desc, time.perf_counter() - start
