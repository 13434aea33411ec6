"""Presets: named bundles of output options, from the package's file and an operator's own.

A preset holds option fields as text, exactly as a form or the CLI would send them, and is
validated when loaded (a bad preset file fails at start, not on the first request using it).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from imaging.errors import InvalidOptionError
from imaging.options import OPTION_NAMES, RenderOptions


@dataclass(frozen=True)
class Preset:
    """One preset: its option fields (text) and what it is for."""

    name: str
    fields: dict[str, str]
    description: str = ""


def builtin_presets() -> dict[str, Preset]:
    """The presets shipped with the package (`imaging/presets.yaml`)."""
    text = resources.files("imaging").joinpath("presets.yaml").read_text(encoding="utf-8")
    return parse_presets(yaml.safe_load(text), source="imaging/presets.yaml")


def load_presets(extra_file: str | Path | None = None) -> dict[str, Preset]:
    """Built-in presets, then those of ``extra_file`` (which may override a built-in)."""
    presets = builtin_presets()
    if extra_file:
        path = Path(extra_file)
        presets.update(parse_presets(yaml.safe_load(path.read_text("utf-8")), source=str(path)))
    return presets


def preset_fields(presets: dict[str, Preset]) -> dict[str, dict[str, str]]:
    """The name -> fields mapping that `RenderOptions.parse` takes."""
    return {name: p.fields for name, p in presets.items()}


def parse_presets(document: Any, *, source: str) -> dict[str, Preset]:
    """Validate a presets document: a mapping of name -> option fields (+ description)."""
    if not isinstance(document, dict):
        raise ValueError(f"{source}: expected a mapping of preset names to options")
    presets: dict[str, Preset] = {}
    for name, body in document.items():
        key = str(name).strip().lower()
        if not isinstance(body, dict):
            raise ValueError(f"{source}: preset {name!r} must be a mapping of options")
        description = str(body.get("description", "")).strip()
        fields = {str(k): str(v) for k, v in body.items() if k != "description"}
        unknown = sorted(set(fields) - (OPTION_NAMES - {"preset"}))
        if unknown:
            raise ValueError(f"{source}: preset {name!r} has unknown option(s) {unknown}")
        try:
            RenderOptions.parse(fields)
        except InvalidOptionError as exc:
            raise ValueError(f"{source}: preset {name!r}: {exc.message}") from None
        presets[key] = Preset(key, fields, description)
    return presets
