"""Finding, reading and checking RMBG-2.0 / BiRefNet weights.

A weights source is a local `.safetensors` file, a local directory holding
one, or a Hugging Face hub repo id (default `briaai/RMBG-2.0`, gated). Every
way this can fail becomes one of the typed errors of `models.errors`, with a
message that tells the operator what to do; the service picks its fallback
from the type.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from models.birefnet import BiRefNet, BiRefNetConfig
from models.errors import (
    CorruptWeightsError,
    GatedRepoError,
    NetworkUnavailableError,
    StateDictMismatchError,
    WeightsError,
    WeightsNotFoundError,
)

DEFAULT_REPO_ID = "briaai/RMBG-2.0"
WEIGHTS_FILENAME = "model.safetensors"
LICENCE_URL = "https://huggingface.co/briaai/RMBG-2.0"

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_TRUE = {"1", "true", "yes", "on"}


def offline_from_env() -> bool:
    """Whether HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) asks for offline mode *now*.

    Read at call time on purpose: huggingface_hub reads it once at import.
    """
    return any(
        os.environ.get(var, "").strip().lower() in _TRUE
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _looks_like_path(source: str) -> bool:
    """Anything that is not shaped like `owner/name` is taken as a local path."""
    return (
        source.startswith(("/", ".", "~"))
        or source.endswith(".safetensors")
        or "\\" in source
        or not _REPO_ID.match(source)
    )


def _file_in_directory(directory: Path) -> Path:
    preferred = directory / WEIGHTS_FILENAME
    if preferred.is_file():
        return preferred
    candidates = sorted(p for p in directory.glob("*.safetensors") if p.is_file())
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise WeightsNotFoundError(
            f"No .safetensors file in {directory}. Put the RMBG-2.0 `{WEIGHTS_FILENAME}` there,"
            " or point the weights setting at the file itself."
        )
    names = ", ".join(p.name for p in candidates)
    raise WeightsNotFoundError(
        f"{directory} holds several .safetensors files ({names}) and no `{WEIGHTS_FILENAME}`;"
        " point the weights setting at the one to use."
    )


def map_hub_error(
    error: BaseException, *, repo_id: str, revision: str | None, offline: bool, has_token: bool
) -> WeightsError:
    """Translate a huggingface_hub / network exception into a typed weights error.

    Order matters: in huggingface_hub, GatedRepoError is a subclass of
    RepositoryNotFoundError, Revision/RepositoryNotFound and RemoteEntryNotFound
    are HfHubHTTPErrors, and LocalEntryNotFoundError is an EntryNotFoundError.
    """
    from huggingface_hub import errors as hf

    rev = f" at revision {revision!r}" if revision else ""
    fetch_hint = (
        "pre-fetch it on a machine with network access"
        f" (`hf download {repo_id} {WEIGHTS_FILENAME}`, then copy the HF cache or set HF_HOME),"
        " or set the weights source to a local directory"
        " or .safetensors file."
    )
    token_hint = (
        f"accept the licence at {LICENCE_URL} with your Hugging Face account, then set HF_TOKEN"
        " to a read token of that account."
    )
    if isinstance(error, hf.GatedRepoError):
        state = "the token was refused" if has_token else "no token was given"
        return GatedRepoError(
            f"Access to the gated repo {repo_id} was refused ({state}): {token_hint}"
        )
    if isinstance(error, hf.RevisionNotFoundError):
        return WeightsNotFoundError(
            f"Revision {revision!r} does not exist in {repo_id}; fix or remove the pinned revision."
        )
    if isinstance(error, hf.RepositoryNotFoundError):
        extra = "" if has_token else f" If it is private or gated, {token_hint}"
        return WeightsNotFoundError(
            f"Repository {repo_id} not found (or not visible to this token).{extra}"
            " Check the repo id in the weights setting."
        )
    if isinstance(error, hf.LocalEntryNotFoundError):
        if offline:
            return NetworkUnavailableError(
                f"Offline mode is on and {repo_id}/{WEIGHTS_FILENAME}{rev} is not in the local"
                f" Hugging Face cache: {fetch_hint}"
            )
        return NetworkUnavailableError(
            f"Cannot reach the Hugging Face hub and {repo_id}/{WEIGHTS_FILENAME}{rev} is not"
            f" cached: check the network or proxy settings, or {fetch_hint}"
        )
    if isinstance(error, hf.EntryNotFoundError):
        return WeightsNotFoundError(
            f"{repo_id}{rev} has no file {WEIGHTS_FILENAME}; check the repo id and revision."
        )
    if isinstance(error, hf.OfflineModeIsEnabled):
        return NetworkUnavailableError(
            f"Offline mode is on and {repo_id} is not cached: {fetch_hint}"
        )
    if isinstance(error, hf.HfHubHTTPError):
        response = getattr(error, "response", None)
        status = getattr(response, "status_code", None)
        if status in (401, 403):
            what = "invalid or lacks permission" if has_token else "missing"
            return GatedRepoError(
                f"The hub answered {status} for {repo_id}: the token is {what}. {token_hint}"
            )
        return NetworkUnavailableError(
            f"The Hugging Face hub failed for {repo_id} (HTTP {status}) and the weights are not"
            f" cached: retry later, or {fetch_hint}"
        )
    if isinstance(error, ValueError):  # HFValidationError: malformed repo id / revision
        return WeightsNotFoundError(
            f"{repo_id!r} is neither an existing local path nor a valid hub repo id: {error}"
        )
    transport = type(error).__module__.split(".")[0] in {"httpx", "httpx2", "requests", "urllib3"}
    if transport or isinstance(error, (ConnectionError, TimeoutError)):
        return NetworkUnavailableError(
            f"Could not download {repo_id}/{WEIGHTS_FILENAME}: {error}. {fetch_hint}"
        )
    if isinstance(error, OSError):  # disk full, read-only or unwritable cache directory
        return WeightsError(
            f"I/O error while storing {repo_id}/{WEIGHTS_FILENAME} in the Hugging Face cache:"
            f" {error}. Check free space and permissions of HF_HOME (or cache_dir)."
        )
    return WeightsError(f"Unexpected error while fetching {repo_id}: {error!r}")


def resolve_weights(
    source: str | Path | None = None,
    *,
    revision: str | None = None,
    token: str | None = None,
    offline: bool | None = None,
    cache_dir: str | Path | None = None,
) -> Path:
    """Path of the `.safetensors` file named by `source`, downloading it from the hub if needed.

    `offline=None` follows HF_HUB_OFFLINE; `token=None` follows HF_TOKEN (and the
    token saved by `hf auth login`). Downloads go to the standard HF cache (or
    `cache_dir`) with huggingface_hub's own progress bar.
    """
    if source is None:
        source = DEFAULT_REPO_ID
    if isinstance(source, Path) or _looks_like_path(str(source)) or Path(source).exists():
        path = Path(source).expanduser()
        if path.is_dir():
            return _file_in_directory(path)
        if path.is_file():
            return path
        raise WeightsNotFoundError(
            f"Weights path {path} does not exist. Set the weights source to an existing"
            f" directory or .safetensors file, or to a hub repo id such as {DEFAULT_REPO_ID}."
        )
    return _download(
        str(source), revision=revision, token=token, offline=offline, cache_dir=cache_dir
    )


def _download(
    repo_id: str,
    *,
    revision: str | None,
    token: str | None,
    offline: bool | None,
    cache_dir: str | Path | None,
) -> Path:
    from huggingface_hub import hf_hub_download

    offline = offline_from_env() if offline is None else offline
    token = token or os.environ.get("HF_TOKEN") or None
    try:
        path = hf_hub_download(
            repo_id,
            WEIGHTS_FILENAME,
            revision=revision,
            token=token,
            cache_dir=cache_dir,
            local_files_only=offline,
        )
    except Exception as error:  # mapped to a typed error, cause kept for the logs
        raise map_hub_error(
            error, repo_id=repo_id, revision=revision, offline=offline, has_token=bool(token)
        ) from error
    return Path(path)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file on the CPU; anything unreadable is CorruptWeightsError."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except FileNotFoundError as error:
        raise WeightsNotFoundError(f"Weights file {path} does not exist.") from error
    except Exception as error:  # SafetensorError, OSError on truncated or foreign files
        raise CorruptWeightsError(
            f"{path} is not a readable safetensors file ({error}). It may be truncated or in"
            " another format: delete it (or its HF cache entry) and download it again."
        ) from error


def check_state_dict(
    state_dict: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], *, arch: str
) -> None:
    """Raise StateDictMismatchError naming the first missing/unexpected keys and bad shapes."""
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if not (missing or unexpected or shapes):
        return

    def first(items: list[str]) -> str:
        more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
        return ", ".join(items[:5]) + more

    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys: {first(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys: {first(unexpected)}")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatches: {first(shapes)}")
    raise StateDictMismatchError(
        f"The checkpoint does not fit the {arch!r} network: " + "; ".join(parts) + "."
        " Check that the weights source and the arch setting name the same model"
        " (rmbg-2.0 = Swin-L BiRefNet, birefnet-lite = Swin-T)."
    )


def build_birefnet(state_dict: Mapping[str, torch.Tensor], config: BiRefNetConfig) -> BiRefNet:
    """A BiRefNet in eval mode holding `state_dict` (checked strictly first).

    The network is built on the meta device and the checkpoint tensors are
    assigned, so no random init runs and the weights are held once in memory.
    """
    with torch.device("meta"):
        model = BiRefNet(config)
    check_state_dict(state_dict, model.state_dict(), arch=config.name)
    sd = {
        k: v.float() if v.is_floating_point() and v.dtype != torch.float32 else v
        for k, v in state_dict.items()
    }
    model.load_state_dict(sd, strict=True, assign=True)
    return model.eval()


def load_birefnet(
    source: str | Path | None = None,
    *,
    arch: str = "rmbg-2.0",
    revision: str | None = None,
    token: str | None = None,
    offline: bool | None = None,
    cache_dir: str | Path | None = None,
    config: BiRefNetConfig | None = None,
) -> BiRefNet:
    """Resolve, read, check and load weights into a ready (eval, CPU, fp32) BiRefNet.

    `config` overrides the preset named by `arch` (e.g. another patch order).
    """
    config = config or BiRefNetConfig.preset(arch)
    path = resolve_weights(
        source, revision=revision, token=token, offline=offline, cache_dir=cache_dir
    )
    return build_birefnet(read_state_dict(path), config)
