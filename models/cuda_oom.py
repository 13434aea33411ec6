"""CUDA out-of-memory, recognised by its type and turned into the typed error fallbacks use.

A batch too large for the GPU (share) raises torch's out-of-memory error; the service falls
back to U2-Net and batch jobs retry image by image, both on `models.errors.OutOfMemoryError`.
"""

from __future__ import annotations

import sys

from models.errors import OutOfMemoryError


def is_cuda_oom(exc: BaseException) -> bool:
    """Whether `exc` is torch's out-of-memory error (`torch.OutOfMemoryError` from torch 2.5,
    `torch.cuda.OutOfMemoryError` before; the same class where both exist).

    torch is not imported to answer: where it never was, no torch model ran out of memory.
    """
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    return isinstance(exc, oom)


def translate_cuda_oom(exc: Exception, message: str) -> Exception:
    """`OutOfMemoryError` saying `message` (and torch's words) for a CUDA OOM, else `exc`.

    The allocator's cached blocks are released first, so that a smaller batch may fit.
    """
    if not is_cuda_oom(exc):
        return exc
    sys.modules["torch"].cuda.empty_cache()
    return OutOfMemoryError(f"{message} ({exc})")
