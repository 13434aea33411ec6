"""The in-process commands' settings: the service's shared ones, with the CLI's flags on top.

`models.settings.RemovalSettings` (the BG_REMOVAL_* variables and `.env` file a service
operator already uses: models, their loading, limits) read once here, without the service's
own settings or Ray Serve. Apart from `bgremove.local` so that ``fetch`` and ``quantize``
read the same settings without loading the image pipeline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bgremove.errors import SetupError
from models.hardware import usable_cpus
from models.registry import U2NET
from models.settings import RemovalSettings
from models.settings_file import SettingsFileError
from models.u2net_weights import default_u2net_home

#: the CLI's model when neither --model nor BG_REMOVAL_MODEL says: it runs on any CPU and
#: its weights download without an account (RMBG-2.0 is gated and slow without a GPU)
DEFAULT_MODEL = U2NET


def u2net_home(settings: RemovalSettings, override: Path | None = None) -> Path:
    """The U2-Net folder a CLI command works in: its ``--home``, else the settings'
    ``u2net_home``, else rembg's (``U2NET_HOME``, ``~/.u2net``)."""
    if override is not None:
        return override
    return Path(settings.u2net_home) if settings.u2net_home else default_u2net_home()


def cli_settings(
    model: str | None = None,
    threads: int | None = None,
    instances: int = 1,
    **overrides: Any,
) -> RemovalSettings:
    """The service's shared settings (BG_REMOVAL_* variables), with the CLI's flags on top.

    In-process the CLI owns the machine: RMBG-2.0 gets every CPU unless a thread count is
    set (a service replica gets its Ray reservation); several model instances split the
    CPUs between them. ``overrides``: other settings a command's flags set.
    """
    if model is not None:
        overrides["model"] = model
    if threads is not None:
        overrides.update(u2net_threads=threads, rmbg_threads=threads)
    try:
        settings = RemovalSettings.load(**overrides)
    except (ValidationError, SettingsFileError) as exc:
        raise SetupError(f"invalid settings: {exc}", code="invalid_settings") from None
    update: dict[str, Any] = {}
    if "model" not in settings.model_fields_set:
        update["model"] = DEFAULT_MODEL
    share = max(1, usable_cpus() // instances)
    if settings.u2net_threads is None and instances > 1:
        update["u2net_threads"] = share
    if settings.rmbg_threads is None:
        update["rmbg_threads"] = share
    return settings.model_copy(update=update) if update else settings
