"""Command-line flags shared by subcommands: those that remove backgrounds, and the
U2-Net folder of those that prepare models.

The output options are generated from `imaging.options.OPTION_FIELDS`, the one list the
HTTP form and job configs use too, so a new option appears here with the same name and help
without touching the CLI. Values travel as text, exactly as a form would send them, and are
validated by `RenderOptions.parse`, so the CLI refuses what the API refuses, with the same
messages.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from imaging.errors import InvalidOptionError
from imaging.formats import FORMATS
from imaging.options import OPTION_FIELDS, OutputFormat, RenderOptions, parse_format
from imaging.presets import builtin_presets
from models.registry import TIERS

#: env variable holding the API key of ``--url`` (the service reads BG_REMOVAL_API_KEYS)
API_KEY_ENV = "BG_REMOVAL_API_KEY"
#: file suffix of each output format
SUFFIXES: dict[OutputFormat, str] = {fmt: info.suffix for fmt, info in FORMATS.items()}
_BOOL_CHOICES = ("true", "false")


def add_u2net_home_flag(parser: argparse.ArgumentParser) -> None:
    """``--home DIR``: the U2-Net folder (read by `bgremove.settings.u2net_home`)."""
    parser.add_argument(
        "--home",
        type=Path,
        default=None,
        metavar="DIR",
        help="U2-Net folder; default: BG_REMOVAL_U2NET_HOME, U2NET_HOME, else ~/.u2net",
    )


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a number > 0."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


def flag_name(field_name: str) -> str:
    """`crop_margin` -> `--crop-margin`."""
    return "--" + field_name.replace("_", "-")


def add_option_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per output option of the API, plus ``--bg-image FILE``."""
    group = parser.add_argument_group(
        "output options (the API's form fields, same names and rules)"
    )
    for field in OPTION_FIELDS:
        help_text = field.help.replace("%", "%%")  # argparse formats help with %
        if field.name == "preset":
            help_text += f" Built-in: {', '.join(builtin_presets())}."
        elif field.choices and field.choices != _BOOL_CHOICES:
            help_text += f" One of: {', '.join(field.choices)}."
        elif field.example and field.example not in field.help:
            help_text += f" E.g. {field.example.replace('%', '%%')}."
        if field.choices == _BOOL_CHOICES:
            # a yes/no option is a switch: `--crop` / `--no-crop`
            group.add_argument(
                flag_name(field.name),
                dest=field.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text,
            )
            continue
        group.add_argument(
            flag_name(field.name),
            dest=field.name,
            default=None,
            metavar=f"{{{','.join(field.choices)}}}" if field.choices else field.name.upper(),
            help=help_text,
        )
    group.add_argument(
        "--bg-image",
        type=Path,
        default=None,
        metavar="FILE",
        help="Background photo, scaled to cover the canvas behind the subject "
        "(the API's bg_image_file).",
    )


def add_engine_flags(parser: argparse.ArgumentParser) -> None:
    """Where the work runs: in-process (``--model``, ``--threads``) or on a service
    (``--url``, ``--api-key``, ``--retries``, ``--timeout``)."""
    local = parser.add_argument_group(
        "in-process model (the service's settings apply: BG_REMOVAL_* variables)"
    )
    local.add_argument(
        "--model",
        choices=sorted(TIERS),
        default=None,
        help="Model tier; default: BG_REMOVAL_MODEL if set, else u2net (fast on CPUs; "
        "rmbg-2.0 is gated on the Hugging Face hub and wants a GPU).",
    )
    local.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        metavar="N",
        help="Model threads; default: measured for u2net, every CPU for rmbg-2.0.",
    )
    local.add_argument(
        "--instances",
        type=positive_int,
        default=None,
        metavar="N",
        help="Model instances working side by side, each with its share of the CPUs; "
        "default 1. Two 1-thread u2net instances gave 5-9%% more images/s than one on both "
        "cores of a 2-core EPYC (docs/benchmarks.md), at twice the memory.",
    )
    remote = parser.add_argument_group("remote service")
    remote.add_argument(
        "--url",
        default=None,
        metavar="URL",
        help="Send the work to a running service at URL (e.g. http://localhost:8000) "
        "instead of running the model here.",
    )
    remote.add_argument(
        "--api-key",
        default=None,
        metavar="KEY",
        help=f"The service's API key; default: ${API_KEY_ENV}.",
    )
    remote.add_argument(
        "--retries",
        type=non_negative_int,
        default=5,
        metavar="N",
        help="Retries of a request the service answers 429/503 (after its Retry-After) or "
        "cannot be reached (default: 5).",
    )
    remote.add_argument(
        "--timeout",
        type=positive_float,
        default=120.0,
        metavar="SECONDS",
        help="Per-request read timeout (default: 120).",
    )


def option_fields(args: argparse.Namespace) -> dict[str, str]:
    """The option flags that were given, as the form fields the API takes."""
    fields: dict[str, str] = {}
    for field in OPTION_FIELDS:
        value = getattr(args, field.name, None)
        if value is None:
            continue
        fields[field.name] = ("true" if value else "false") if isinstance(value, bool) else value
    return fields


def format_from_suffix(path: str) -> str | None:
    """The output format an OUTPUT file name asks for (`.jpg` -> jpeg), if it names one."""
    suffix = Path(path).suffix.lower().lstrip(".")
    try:
        return parse_format(suffix).value if suffix else None
    except InvalidOptionError:
        return None


@dataclass(frozen=True)
class ResolvedOptions:
    """The option fields to apply, and their validated form where it could be validated
    here (a preset known only to the remote service is the service's to check)."""

    fields: dict[str, str]
    options: RenderOptions | None

    @property
    def fmt(self) -> OutputFormat:
        """The output format: validated, else the ``format`` field, else PNG (the API's)."""
        if self.options is not None:
            return self.options.fmt
        return parse_format(self.fields.get("format"))


def resolve_options(
    fields: dict[str, str],
    presets: Mapping[str, Mapping[str, str]],
    *,
    bg_image: bool,
    remote: bool,
) -> ResolvedOptions:
    """Validate ``fields`` before any work, as the API would; `InvalidOptionError` if not.

    With ``remote``, a preset this machine does not know may be one of the service's own
    (its `presets_file`): those fields go as they are and the service answers for them.
    """
    preset = fields.get("preset", "").strip().lower()
    if remote and preset and preset not in presets:
        return ResolvedOptions(fields, None)
    return ResolvedOptions(fields, RenderOptions.parse(fields, presets=presets, bg_image=bg_image))
