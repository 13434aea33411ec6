#!/usr/bin/env python3
"""Write docs/configuration.md from the settings' own field descriptions.

The tables list every field of `deployments.settings.ServiceSettings` (with the fields it
inherits from `models.settings.RemovalSettings`) and of `bgremove.batch_settings.BatchSettings` with
its environment variables, type, default and description, so the page cannot drift from the
code: a new or changed setting is documented by its `Field(description=...)` and a rerun.

    .venv/bin/python scripts/make_config_docs.py            # rewrite the page
    .venv/bin/python scripts/make_config_docs.py --check    # CI: exit 1 when it is stale

Only the text around the tables (where settings come from, the `.env` file, secrets)
is written here, as constants.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import annotated_types
from pydantic import AliasChoices, BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from bgremove import batch_command
from bgremove.batch_settings import BatchSettings
from deployments.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "configuration.md"

HEADER = """\
# Configuration

Every setting of the service and of batch jobs: its environment variable, type, default and
meaning. The tables are generated from the settings' own descriptions by
`scripts/make_config_docs.py`; change a description in `models/settings.py`,
`deployments/settings.py` or `bgremove/batch_settings.py` and rerun the script, not this page.

## Where settings come from

Highest priority first:

1. the `args:` block of the Serve config (for `bgremove` and batch jobs: their flags);
2. real environment variables: `BG_REMOVAL_<NAME>` in upper case, or the other names the
   tables show (`U2NET_HOME`, the `AWS_*` names);
3. the `.env` file (below);
4. the defaults.

They are read once, when Serve builds the app, and passed down to the deployments, so
replicas on other nodes or in other directories get them too. For `serve deploy`, set
environment variables under the application's `runtime_env.env_vars`: they must be visible
where Serve builds the app. Which settings change in place and which restart replicas:
[Rollouts](deployment.md#rollouts).

## The `.env` file

As the migration guide configures the service, and rolls back to U2-Net:

```bash
# .env, in the directory you start scripts/run.sh (or bgremove, or a batch job) from
BG_REMOVAL_MODEL=u2net        # rmbg-2.0 (default) or u2net
BG_REMOVAL_DEVICE=auto        # auto, cuda or cpu (RMBG-2.0's replicas)
BG_REMOVAL_FALLBACK=true      # serve with U2-Net when RMBG-2.0 cannot
```

Then restart (`scripts/run.sh`); health's `model_name` shows the model. Any variable of the
tables below can be a line (`NAME=value`, `export NAME=value`, quotes for spaces,
`# comments`; `U2NET_HOME` too). Real environment variables win over the file, and the
config's `args:` over both. Batch jobs read their `BG_REMOVAL_BATCH_*` lines from the same
file (flags win).

A line that cannot be read, a name without a value or an unknown `BG_REMOVAL_` name (a
typo) stops the start with the file and line. Other names (`HF_TOKEN`) are not settings and
are ignored with a warning: put secrets in the environment. The start-up log
(`settings: model ..., file ...`) and detailed health (`settings_file`) say which file was
read.

Which file: `BG_REMOVAL_ENV_FILE` names it (an empty value reads none); without it, `./.env`
where the settings are read, if it exists. `scripts/run.sh` names the `.env` of the
directory you start it from. For `serve deploy` on a cluster, set `BG_REMOVAL_ENV_FILE` to a
path where Serve builds the app (e.g. on the model volume) in the app's
`runtime_env.env_vars`.

## Secrets and the model hub

`HF_TOKEN` (read by `huggingface_hub`) authorises the RMBG-2.0 download. It is deliberately
not a setting (settings travel in Serve's stored config): it must be in the environment of
the RMBG-2.0 replicas, e.g. from a Kubernetes secret on the KubeRay worker pods, or
`runtime_env.env_vars` of the app. `HF_HOME`/`HF_HUB_CACHE` move the hub cache;
`HF_HUB_OFFLINE=1` forbids network access (the cache or a local path must then hold the
weights). API keys (`BG_REMOVAL_API_KEYS`) come from a secret too: only their SHA-256
hashes travel to the replicas ([Access](api.md#access-api-keys-health-cors)).

The `bgremove` client of a running service reads its key from `BG_REMOVAL_API_KEY`
([cli.md](cli.md#sending-the-work-to-a-service)); S3 credentials of batch jobs come from the
usual `AWS_*` variables or flags ([batch.md](batch.md#s3-credentials-and-s3-compatible-stores)).
"""

SERVICE_INTRO = """\
## Service settings

`deployments.settings.ServiceSettings`: the service, `bgremove` in-process and the models of
batch jobs (the fields shared by every entry point, from `models.settings.RemovalSettings`,
come first). The setting's name is its key under `args:`; config files:
[deployment.md](deployment.md#serve-configs).
"""

BATCH_INTRO = """\
## Batch job settings

`bgremove.batch_settings.BatchSettings`: `bgremove batch` only, on top of the service settings above
(which give the models and limits). Flags win over the variables
([batch.md](batch.md#resources-per-stage)).
"""

FOOTER = """\
---

Generated by `scripts/make_config_docs.py`; CI fails when this page is older than the
settings (`tests/docs/test_config_docs.py`).
"""

#: How annotated constraints read in the type column.
_CONSTRAINTS: tuple[tuple[type[Any], str, str], ...] = (
    (annotated_types.Ge, "ge", ">="),
    (annotated_types.Gt, "gt", ">"),
    (annotated_types.Le, "le", "<="),
    (annotated_types.Lt, "lt", "<"),
    (annotated_types.MinLen, "min_length", "length >="),
    (annotated_types.MaxLen, "max_length", "length <="),
)
#: Plain names of the types settings use; anything else falls back to its own name.
_TYPE_NAMES: dict[Any, str] = {
    str: "text",
    int: "integer",
    float: "number",
    bool: "`true` or `false`",
    dict: "mapping",
    list: "list",
    type(None): "none",
}


def env_names(name: str, info: FieldInfo, prefix: str) -> list[str]:
    """The environment variables pydantic-settings reads for one field.

    Without an alias that is `<prefix><name>` in upper case; a `validation_alias` replaces
    the prefixed name with its choices (matched case-insensitively: `u2net_home` and
    `U2NET_HOME` are one variable).
    """
    alias = info.validation_alias or info.alias
    if isinstance(alias, AliasChoices):
        choices = [choice for choice in alias.choices if isinstance(choice, str)]
    elif isinstance(alias, str):
        choices = [alias]
    else:
        choices = [f"{prefix}{name}"]
    return list(dict.fromkeys(choice.upper() for choice in choices))


def type_text(annotation: Any) -> str:
    """A reader's name for a field's type: choices spelt out, `X or none` for optionals."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return ", ".join(f"`{value}`" for value in args)
    if origin is typing.Union or origin is types.UnionType:
        return " or ".join(type_text(arg) for arg in args)
    if origin is typing.Annotated:
        return type_text(args[0])
    if origin is list:
        return "comma-separated list" if args else "list"
    if origin is not None:
        return _TYPE_NAMES.get(origin, getattr(origin, "__name__", str(origin)))
    if annotation in _TYPE_NAMES:
        return _TYPE_NAMES[annotation]
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return "mapping"
        return {"SecretStr": "secret text"}.get(annotation.__name__, annotation.__name__)
    return str(annotation).replace("typing.", "")


def constraints_text(info: FieldInfo) -> str:
    """Bounds such as `>= 32, <= 4096` from the field's metadata (`Field(ge=..., le=...)`)."""
    parts = []
    for item in info.metadata:
        for kind, attribute, symbol in _CONSTRAINTS:
            if isinstance(item, kind):
                parts.append(f"{symbol} {getattr(item, attribute)}")
    return ", ".join(parts)


def default_text(info: FieldInfo) -> str:
    """The default as it would be written in a `.env` file; `none` and `empty` spelt out."""
    if info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
    elif info.default is PydanticUndefined:
        return "required"
    else:
        value = info.default
    if value is None:
        return "none"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str | list | tuple | dict | set) and not value:
        return "empty"
    if isinstance(value, dict | list):
        return f"`{json.dumps(value)}`"
    return f"`{value}`"


def cell(text: str) -> str:
    """Text safe inside a Markdown table cell: one line, pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def batch_flags() -> dict[str, str]:
    """Batch setting -> its `bgremove batch` flag, from the subcommand's own flag tables
    (none where a table is renamed or gone: the column then stays empty, not wrong)."""
    flags: dict[str, str] = {}
    for table in ("_JOB_FLAGS", "_S3_FLAGS"):
        for flag, spec in getattr(batch_command, table, {}).items():
            flags.setdefault(spec[0], flag)
    return flags


def settings_table(
    settings_cls: type[BaseModel], prefix: str, flags: Mapping[str, str] | None = None
) -> str:
    """One row per field of ``settings_cls``, in definition order (inherited fields first);
    with ``flags`` (setting -> command-line flag), a column for them."""
    head = ["setting", "environment variable", "type", "default", "meaning"]
    if flags is not None:
        head.insert(2, "flag")
    rows = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for name, info in settings_cls.model_fields.items():
        variables = ", ".join(f"`{variable}`" for variable in env_names(name, info, prefix))
        kind = type_text(info.annotation)
        bounds = constraints_text(info)
        if bounds:
            kind = f"{kind} ({bounds})"
        cells = [f"`{name}`", variables, kind, default_text(info), info.description or ""]
        if flags is not None:
            cells.insert(2, f"`{flags[name]}`" if name in flags else "")
        rows.append("| " + " | ".join(cell(text) for text in cells) + " |")
    return "\n".join(rows) + "\n"


def env_prefix(settings_cls: type[BaseModel]) -> str:
    return str(settings_cls.model_config.get("env_prefix", ""))


def render() -> str:
    """The whole page."""
    parts: Iterable[str] = (
        HEADER,
        SERVICE_INTRO,
        settings_table(ServiceSettings, env_prefix(ServiceSettings)),
        BATCH_INTRO,
        settings_table(BatchSettings, env_prefix(BatchSettings), batch_flags()),
        FOOTER,
    )
    return "\n".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the page is stale")
    parser.add_argument("--output", type=Path, default=PAGE, help="the page to write or check")
    args = parser.parse_args(argv)

    wanted = render()
    current = args.output.read_text(encoding="utf-8") if args.output.exists() else None
    if wanted == current:
        return 0
    if args.check:
        print(
            f"{args.output}: out of date with the settings' descriptions; "
            "run scripts/make_config_docs.py",
            file=sys.stderr,
        )
        return 1
    args.output.write_text(wanted, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
