"""What the RMBG-2.0 OpenVINO benchmarks share: their model flags and the f32 model.

Without ``--weights`` the checkpoint is the parity tests' synthetic one, written once
into ``--cache`` beside the converted model: timings are those of the real network
(same graph), mask figures are not.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from models.rmbg_openvino import RMBGOpenVINOPredictor
from models.rmbg_weights import load_birefnet


def add_model_args(parser: argparse.ArgumentParser, resolution: int) -> None:
    """``--arch``, ``--resolution``, ``--weights`` and ``--cache``."""
    parser.add_argument("--arch", default="rmbg-2.0")
    parser.add_argument("--resolution", type=int, default=resolution)
    parser.add_argument("--weights", type=Path, help="checkpoint folder (default: synthetic)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "ov-explore")


def f32_predictor(args: argparse.Namespace) -> RMBGOpenVINOPredictor:
    """The service's OpenVINO model in f32 (converted once into ``args.cache``).

    Sets ``args.weights`` to the synthetic checkpoint when it was not given.
    """
    if args.weights is None:
        from tests.support.birefnet_weights import write_synthetic_checkpoint

        args.weights = args.cache / f"synthetic-{args.arch}"
        if not (args.weights / "model.safetensors").is_file():
            write_synthetic_checkpoint(args.weights, args.arch)
    return RMBGOpenVINOPredictor(
        load_birefnet(args.weights, arch=args.arch),
        resolution=args.resolution,
        precision="f32",
        cache_dir=args.cache,
    )
