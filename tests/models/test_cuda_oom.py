"""CUDA OOM is recognised by torch's type, not by a class name, and becomes a typed error."""

from __future__ import annotations

import torch

from models.cuda_oom import is_cuda_oom, translate_cuda_oom
from models.errors import OutOfMemoryError


def test_torch_oom_becomes_the_typed_error() -> None:
    oom = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert is_cuda_oom(oom)
    error = translate_cuda_oom(oom, "CUDA out of memory in RMBG-2.0: lower the batch size")
    assert isinstance(error, OutOfMemoryError) and error.code == "out_of_memory"
    assert str(error) == (
        "CUDA out of memory in RMBG-2.0: lower the batch size "
        "(CUDA out of memory. Tried to allocate 2.00 GiB)"
    )


def test_other_errors_pass_through() -> None:
    class OutOfMemoryError(RuntimeError):  # the same name, not torch's
        pass

    for exc in (OutOfMemoryError("host"), RuntimeError("CUDA error"), MemoryError()):
        assert not is_cuda_oom(exc)
        assert translate_cuda_oom(exc, "unused") is exc
