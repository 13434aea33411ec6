"""The packages stack one way: `deployments` (Ray Serve) on `bgremove`, `models` and `imaging`;
`bgremove` on `models` and `imaging`; `models` on `imaging`; `imaging` on none of them.

So the CLI and batch jobs never load the service (Ray Serve, its settings and validation),
and the image pipeline stays usable without any model. Every import counts, those inside
functions and under TYPE_CHECKING too: a lazy import is one edit away from a top-level one.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: package -> the project's packages it must never import
FORBIDDEN: dict[str, frozenset[str]] = {
    "bgremove": frozenset({"deployments"}),
    "models": frozenset({"deployments", "bgremove"}),
    "imaging": frozenset({"deployments", "bgremove", "models"}),
}

#: libraries that cost from a tenth of a second to seconds to import: loaded by the command
#: that needs them (a model's runtime, refined edges, a job's storage, a client), never by
#: ``bgremove --help`` or the parsing of a command line
HEAVY = ("numba", "torch", "openvino", "onnxruntime", "ray", "scipy", "pyarrow", "httpx", "fpng")


def imported_packages(source: str, package: str) -> set[str]:
    """The top-level packages that ``source`` (a module of ``package``) imports anywhere."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            # a relative import stays inside its own package
            found.add(package if node.level else (node.module or "").split(".")[0])
    return found


def violations(package: str) -> list[str]:
    """``path: imports name`` for each forbidden import in ``package``'s modules."""
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        names = imported_packages(path.read_text(encoding="utf-8"), package)
        for name in sorted(names & FORBIDDEN[package]):
            found.append(f"{path.relative_to(ROOT)}: imports {name}")
    return found


def test_the_finder_sees_function_and_type_checking_imports() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from deployments.settings import ServiceSettings\n"
        "def f():\n    import models.registry\n"
    )
    assert imported_packages(source, "imaging") >= {"deployments", "models", "typing"}
    assert imported_packages("from . import options\n", "imaging") == {"imaging"}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_packages_import_only_those_below_them(package: str) -> None:
    assert (ROOT / package).is_dir()
    assert violations(package) == []


def test_the_command_line_parses_without_heavy_libraries() -> None:
    """`bgremove --help` (every subcommand's parser built) loads none of `HEAVY`; a fresh
    interpreter, since this one's tests have loaded them all."""
    code = (
        "import json, sys; from bgremove.cli import build_parser; "
        "build_parser().format_help(); print(json.dumps(sorted(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    loaded = {name.split(".")[0] for name in json.loads(done.stdout)}
    assert sorted(loaded & set(HEAVY)) == []
