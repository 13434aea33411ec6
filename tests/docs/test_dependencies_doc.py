"""docs/architecture.md says why each dependency in pyproject.toml is there.

A dependency added without a row in "Dependencies and why" fails here, so the table
cannot fall behind the project's requirements.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: tomllib is 3.11's
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "architecture.md"

#: the distribution name at the start of a requirement (`ray[serve,data]>=2.40` -> `ray`)
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def normalise(name: str) -> str:
    """PEP 503's comparison form: `Huggingface_Hub` and `huggingface-hub` are one project."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements() -> set[str]:
    """Every distribution pyproject.toml asks for, optional extras included."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    specs = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        specs += extra
    names = set()
    for spec in specs:
        match = _NAME.match(spec)
        assert match, f"cannot read the requirement {spec!r}"
        names.add(normalise(match.group(1)))
    return names


def documented() -> set[str]:
    """The names in backticks in the first column of "Dependencies and why"."""
    text = PAGE.read_text(encoding="utf-8")
    section = text.split("## Dependencies and why", 1)[1].split("\n## ", 1)[0]
    names = set()
    for line in section.splitlines():
        if line.startswith("| ") and not line.startswith("| ---"):
            first_cell = line.split("|")[1]
            for name in re.findall(r"`([^`]+)`", first_cell):
                names.add(normalise(re.sub(r"\[.*\]", "", name)))
    return names


def test_every_dependency_says_why_it_is_there() -> None:
    missing = sorted(requirements() - documented())
    assert missing == [], f"add a row to docs/architecture.md, 'Dependencies and why': {missing}"
