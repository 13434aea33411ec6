"""Deterministic synthetic BiRefNet weights, made by the recipe of the parity vectors.

The recipe (see /work/shared/birefnet/README.md) seeds one generator per key
with crc32(key), so any implementation with the checkpoint's key names and
shapes gets bit-identical weights, and the shared parity vectors can check
the numerics without the gated real checkpoint.
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from models.birefnet import BiRefNet, BiRefNetConfig

_SMALL = ("running_mean", "bias", "relative_position_bias_table")


def synthetic_tensor(key: str, shape: tuple[int, ...]) -> torch.Tensor:
    """One float32 tensor following the per-suffix rules of the recipe."""
    rng = np.random.default_rng(zlib.crc32(key.encode("utf-8")))
    z = (rng.random(shape) * 2.0 - 1.0) * math.sqrt(3.0)
    suffix = key.rsplit(".", 1)[-1]
    if suffix == "running_var":
        v = 1.0 + 0.1 * np.abs(z)
    elif suffix in _SMALL:
        v = 0.02 * z
    elif len(shape) == 1:
        v = 1.0 + 0.1 * z
    else:
        v = z / math.sqrt(math.prod(shape[1:]))
    return torch.from_numpy(v.astype(np.float32))


def synthetic_state_dict(preset: str) -> dict[str, torch.Tensor]:
    """Full state dict for `preset`; integer buffers keep the model's own values."""
    # build on the meta device: no parameter init cost; the relative-position
    # index is created on the CPU by the model itself, so it is real even here
    with torch.device("meta"):
        model = BiRefNet(BiRefNetConfig.preset(preset))
    out: dict[str, torch.Tensor] = {}
    for key, ref in model.state_dict().items():
        if ref.is_floating_point():
            out[key] = synthetic_tensor(key, tuple(ref.shape))
        elif ref.is_meta:
            # num_batches_tracked: a fresh BatchNorm holds 0
            out[key] = torch.zeros(ref.shape, dtype=ref.dtype)
        else:
            out[key] = ref.clone()
    return out


def write_synthetic_checkpoint(directory: Path, preset: str = "birefnet-lite") -> Path:
    """Write `model.safetensors` with synthetic weights into `directory`; return its path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "model.safetensors"
    save_file(synthetic_state_dict(preset), str(path))
    return path
