"""Weights resolution and loading: local paths, offline hub cache, and every typed failure.

Nothing here touches the network: HF_HUB_OFFLINE=1 is set for every test, and
hub failures are exercised by mapping real huggingface_hub exception objects.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from huggingface_hub import errors as hf_errors
from safetensors.torch import save_file

from models import errors
from models.birefnet import BiRefNet
from models.rmbg_weights import (
    DEFAULT_REPO_ID,
    load_birefnet,
    map_hub_error,
    resolve_weights,
)
from tests.support.birefnet_weights import synthetic_state_dict, write_synthetic_checkpoint

REVISION = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)


@pytest.fixture(scope="session")
def lite_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_checkpoint(tmp_path_factory.mktemp("lite"), "birefnet-lite")


@pytest.fixture(scope="session")
def hub_cache(tmp_path_factory: pytest.TempPathFactory, lite_checkpoint: Path) -> Path:
    """A populated HF cache layout holding `model.safetensors` of the default repo."""
    cache = tmp_path_factory.mktemp("hf-cache")
    repo = cache / ("models--" + DEFAULT_REPO_ID.replace("/", "--"))
    snapshot = repo / "snapshots" / REVISION
    snapshot.mkdir(parents=True)
    shutil.copy(lite_checkpoint, snapshot / "model.safetensors")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    return cache


def _assert_lite_weights(model: BiRefNet) -> None:
    assert not model.training
    key = "decoder.conv_out1.0.weight"
    ref = synthetic_state_dict("birefnet-lite")[key]
    torch.testing.assert_close(model.state_dict()[key], ref, rtol=0, atol=0)


def test_load_from_directory(lite_checkpoint: Path) -> None:
    _assert_lite_weights(load_birefnet(lite_checkpoint.parent, arch="birefnet-lite"))


def test_load_from_file_given_as_str(lite_checkpoint: Path) -> None:
    model = load_birefnet(str(lite_checkpoint), arch="birefnet-lite")
    _assert_lite_weights(model)
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in model.parameters())


def test_directory_with_one_differently_named_file(tmp_path: Path, lite_checkpoint: Path) -> None:
    shutil.copy(lite_checkpoint, tmp_path / "birefnet_lite.safetensors")
    assert resolve_weights(tmp_path) == tmp_path / "birefnet_lite.safetensors"


def test_directory_with_several_files_is_ambiguous(tmp_path: Path) -> None:
    (tmp_path / "a.safetensors").write_bytes(b"x")
    (tmp_path / "b.safetensors").write_bytes(b"x")
    with pytest.raises(errors.WeightsNotFoundError, match="several"):
        resolve_weights(tmp_path)


def test_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(errors.WeightsNotFoundError, match=r"No \.safetensors"):
        resolve_weights(tmp_path)


@pytest.mark.parametrize("name", ["missing-dir", "missing.safetensors", "a/b/c"])
def test_missing_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(errors.WeightsNotFoundError, match="does not exist"):
        resolve_weights(name if name != "missing-dir" else tmp_path / name)


def test_hub_cache_offline_via_env(hub_cache: Path) -> None:
    model = load_birefnet(DEFAULT_REPO_ID, arch="birefnet-lite", cache_dir=hub_cache)
    _assert_lite_weights(model)


def test_hub_cache_default_source_and_pinned_revision(hub_cache: Path) -> None:
    path = resolve_weights(None, revision=REVISION, offline=True, cache_dir=hub_cache)
    assert path.name == "model.safetensors" and REVISION in str(path)


def test_offline_with_empty_cache(tmp_path: Path) -> None:
    with pytest.raises(errors.NetworkUnavailableError, match="Offline mode") as info:
        resolve_weights(DEFAULT_REPO_ID, offline=True, cache_dir=tmp_path)
    assert "local directory" in str(info.value)


def test_offline_unknown_revision_not_cached(hub_cache: Path) -> None:
    with pytest.raises(errors.NetworkUnavailableError):
        resolve_weights(DEFAULT_REPO_ID, revision="f" * 40, cache_dir=hub_cache)


def test_corrupt_file(tmp_path: Path) -> None:
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"this is not a safetensors file at all")
    with pytest.raises(errors.CorruptWeightsError, match="not a readable safetensors"):
        load_birefnet(tmp_path, arch="birefnet-lite")


def test_truncated_file(tmp_path: Path, lite_checkpoint: Path) -> None:
    data = lite_checkpoint.read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(errors.CorruptWeightsError):
        load_birefnet(tmp_path, arch="birefnet-lite")


def test_wrong_architecture(lite_checkpoint: Path) -> None:
    with pytest.raises(errors.StateDictMismatchError) as info:
        load_birefnet(lite_checkpoint, arch="rmbg-2.0")
    message = str(info.value)
    assert "shape mismatches" in message and "bb.patch_embed.proj.weight" in message
    assert "missing keys" in message  # Swin-L has 18 blocks in stage 3, Swin-T 6


def test_missing_and_unexpected_keys(tmp_path: Path) -> None:
    sd = synthetic_state_dict("birefnet-lite")
    del sd["decoder.conv_out1.0.bias"]
    sd["module.extra.weight"] = torch.zeros(1)
    save_file(sd, str(tmp_path / "model.safetensors"))
    with pytest.raises(errors.StateDictMismatchError) as info:
        load_birefnet(tmp_path, arch="birefnet-lite")
    message = str(info.value)
    assert "1 missing keys: decoder.conv_out1.0.bias" in message
    assert "1 unexpected keys: module.extra.weight" in message


# --- mapping of huggingface_hub exceptions -------------------------------------------------


def _response(status: int) -> object:
    """An HTTP response of the library huggingface_hub uses (httpx-style API)."""
    module = __import__(hf_errors.Response.__module__.split(".")[0])
    request = module.Request("GET", f"https://huggingface.co/{DEFAULT_REPO_ID}/resolve/main/x")
    return module.Response(status, request=request)


def _map(error: BaseException, *, offline: bool = False, token: bool = False) -> Exception:
    return map_hub_error(
        error, repo_id=DEFAULT_REPO_ID, revision=None, offline=offline, has_token=token
    )


def test_map_gated_repo() -> None:
    mapped = _map(hf_errors.GatedRepoError("gated", response=_response(403)), token=True)
    assert type(mapped) is errors.GatedRepoError
    assert "https://huggingface.co/briaai/RMBG-2.0" in str(mapped) and "HF_TOKEN" in str(mapped)


@pytest.mark.parametrize("status", [401, 403])
def test_map_bad_token(status: int) -> None:
    mapped = _map(hf_errors.HfHubHTTPError("denied", response=_response(status)), token=True)
    assert type(mapped) is errors.GatedRepoError
    assert "HF_TOKEN" in str(mapped)


def test_map_repo_not_found_mentions_token_when_none() -> None:
    mapped = _map(hf_errors.RepositoryNotFoundError("nope", response=_response(401)))
    assert type(mapped) is errors.WeightsNotFoundError
    assert "HF_TOKEN" in str(mapped)


def test_map_revision_and_entry_not_found() -> None:
    rev = _map(hf_errors.RevisionNotFoundError("rev", response=_response(404)))
    entry = _map(hf_errors.RemoteEntryNotFoundError("entry", response=_response(404)))
    assert type(rev) is errors.WeightsNotFoundError and "revision" in str(rev).lower()
    assert type(entry) is errors.WeightsNotFoundError and "model.safetensors" in str(entry)


def test_map_network_failures() -> None:
    offline = _map(hf_errors.LocalEntryNotFoundError("not cached"), offline=True)
    down = _map(hf_errors.LocalEntryNotFoundError("connection"), offline=False)
    mode = _map(hf_errors.OfflineModeIsEnabled("offline"))
    server = _map(hf_errors.HfHubHTTPError("boom", response=_response(503)))
    refused = _map(ConnectionError("refused"))
    for mapped in (offline, down, mode, server, refused):
        assert type(mapped) is errors.NetworkUnavailableError
    assert "Offline mode" in str(offline) and "network" in str(down)


def test_map_invalid_repo_id() -> None:
    mapped = _map(hf_errors.HFValidationError("bad id"))
    assert type(mapped) is errors.WeightsNotFoundError


def test_map_cache_write_failure_is_not_a_network_error() -> None:
    mapped = _map(PermissionError("read-only file system"))
    assert type(mapped) is errors.WeightsError
    assert "HF_HOME" in str(mapped)
