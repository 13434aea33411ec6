"""The `.env` settings file that the service, `bgremove` and batch jobs share, read strictly.

Each reader is a pydantic-settings class built on `FileBackedSettings`: values come from its
arguments, then the environment, then the file (`settings_file` finds it), then the defaults.
The file is checked line by line (`read_settings_file`) because python-dotenv is lenient: a
typo in a name would silently change nothing. Several classes read one file, so each says
which of its lines belong to another class (`other_prefix`, `other_settings`) and are not
typos.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from dotenv.parser import parse_stream
from pydantic import AliasChoices
from pydantic_settings import BaseSettings, DotEnvSettingsSource, PydanticBaseSettingsSource

#: The variable that names the settings file; empty: read none.
ENV_FILE_VARIABLE = "BG_REMOVAL_ENV_FILE"
#: The settings file read from the current directory when the variable is not set.
DEFAULT_ENV_FILE = ".env"


class SettingsFileError(ValueError):
    """The settings file cannot be used as it is: names the file and line, says what to do."""


class FileBackedSettings(BaseSettings):
    """Settings whose `.env` file (the ``_env_file`` argument) is read strictly
    (`read_settings_file`), in pydantic-settings' order: arguments, the environment, the
    file, the defaults."""

    #: lines under this prefix belong to another such class (a batch job's BG_REMOVAL_BATCH_*)
    other_prefix: ClassVar[str] = ""
    #: settings under this class's own prefix that another class reads (the service's own)
    other_settings: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        assert isinstance(dotenv_settings, DotEnvSettingsSource)
        file_settings = _StrictFileSource(cls, dotenv_settings.env_file)
        return init_settings, env_settings, file_settings, file_secret_settings

    @classmethod
    def read_file(cls, path: Path) -> SettingsFileLines:
        """This class's lines of the settings file at ``path`` (`read_settings_file`)."""
        prefix = cls.model_config.get("env_prefix", "")
        others = {f"{prefix}{name}".upper() for name in cls.other_settings}
        return read_settings_file(path, cls, cls.other_prefix, others)


def settings_file(given: str | None, environ: Mapping[str, str]) -> Path | None:
    """The settings file to read: ``given`` (the `env_file` arg), else `BG_REMOVAL_ENV_FILE`,
    else `./.env` where it exists; an empty name reads none. A named file must exist."""
    name = given if given is not None else environ.get(ENV_FILE_VARIABLE)
    if name is None:
        default = Path(DEFAULT_ENV_FILE)
        return default.resolve() if default.is_file() else None
    if not name:
        return None
    path = Path(name).expanduser()
    if not path.is_file():
        raise SettingsFileError(
            f"{ENV_FILE_VARIABLE}={name}: no such file; point it at your .env file, "
            "or set it empty to read none"
        )
    return path.resolve()


def variable_names(settings_cls: type[BaseSettings]) -> dict[str, str]:
    """Each setting's environment variables (upper case) -> the setting's name: its prefixed
    name, and its upper-case alias where it has one (`U2NET_HOME`, rembg's)."""
    prefix = settings_cls.model_config.get("env_prefix", "")
    names: dict[str, str] = {}
    for name, info in settings_cls.model_fields.items():
        names[f"{prefix}{name}".upper()] = name
        if isinstance(info.validation_alias, AliasChoices):
            choices = info.validation_alias.choices
            names.update({str(c): name for c in choices if str(c).isupper()})
    names.pop(ENV_FILE_VARIABLE, None)  # named outside the file, never inside it
    return names


@dataclass(frozen=True)
class SettingsFileLines:
    """What a settings file holds for one settings class: its values by variable name, and
    the names that are none of its settings (nor another class's)."""

    values: dict[str, str]
    ignored: tuple[str, ...]


def read_settings_file(
    path: Path,
    settings_cls: type[BaseSettings],
    other_prefix: str = "",
    other_names: Collection[str] = (),
) -> SettingsFileLines:
    """The lines of a .env file that set ``settings_cls``'s settings.

    Strict where python-dotenv is lenient: a line it cannot parse, a name without a value
    and an unknown name with the class's prefix (`BG_REMOVAL_`: a typo would silently change
    nothing) are errors naming the file and line. Names under ``other_prefix`` (a batch
    job's `BG_REMOVAL_BATCH_*`) and the variables ``other_names`` (the service's own
    settings, for `bgremove`) belong to another class, checked there. Other names (e.g.
    `HF_TOKEN`) are not settings: left alone, since secrets belong in the environment, not
    in settings Serve stores.
    """
    known = variable_names(settings_cls)
    prefix = settings_cls.model_config.get("env_prefix", "")
    values: dict[str, str] = {}
    ignored: list[str] = []
    with path.open(encoding="utf-8") as stream:
        for binding in parse_stream(stream):
            text = binding.original.string
            # a binding starts after the previous one, blank lines included: skip them
            line = binding.original.line + text[: len(text) - len(text.lstrip())].count("\n")
            where = f"{path}:{line}"
            if binding.error:
                raise SettingsFileError(
                    f"{where}: cannot read {text.strip()[:60]!r}; "
                    "write NAME=value (quote values with spaces)"
                )
            if binding.key is None:
                continue  # a comment or a blank line
            name = binding.key.upper()
            if binding.value is None:
                raise SettingsFileError(f"{where}: {binding.key} has no value; write {name}=...")
            if name in known:
                values[name] = binding.value
            elif name in other_names or (other_prefix and name.startswith(other_prefix)):
                continue  # another settings class's line
            elif name.startswith(prefix):
                close = difflib.get_close_matches(name, [*known, *other_names], n=1)
                hint = f"; did you mean {close[0]}?" if close else ""
                raise SettingsFileError(f"{where}: {binding.key} is not a setting{hint}")
            else:
                ignored.append(binding.key)
    return SettingsFileLines(values, tuple(ignored))


class _StrictFileSource(DotEnvSettingsSource):
    """pydantic-settings' .env source, reading files through `FileBackedSettings.read_file`."""

    def __init__(self, settings_cls: type[FileBackedSettings], env_file: Any) -> None:
        self._reader = settings_cls  # before the base class reads the file
        super().__init__(settings_cls, env_file=env_file)

    def _read_env_file(self, file_path: Path) -> Mapping[str, str | None]:
        lines = self._reader.read_file(file_path)
        return {name.lower(): value for name, value in lines.values.items()}
