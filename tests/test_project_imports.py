"""Every name the project's files import from its own modules exists there.

The suite runs the packages, not the benchmarks and scripts, so a renamed or moved function
would otherwise break `benchmarks/` and `scripts/` silently (`bench_batch.py` once imported a
`resolve_u2net` that had become `resolve_tier`). Read from the source, nothing imported: a
name counts as defined when a module binds it at its top level (a def, a class, an
assignment, an import, also under `if` and `try`) or names a submodule.
"""

from __future__ import annotations

import ast

import pytest

from tests.support.sources import PACKAGES, ROOT, module_path, project_files


def _bound(body: list[ast.stmt]) -> set[str]:
    """Names a module body binds at its top level, looking into `if`, `try` and `with`."""
    names: set[str] = set()
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        elif isinstance(node, ast.If):
            names |= _bound(node.body) | _bound(node.orelse)
        elif isinstance(node, ast.Try):
            names |= _bound(node.body) | _bound(node.orelse) | _bound(node.finalbody)
            for handler in node.handlers:
                names |= _bound(handler.body)
        elif isinstance(node, ast.With):
            names |= _bound(node.body)
    return names


def missing_names(source: str, resolver: _Resolver | None = None) -> list[str]:
    """`module.name` for each name ``source`` imports from a project module that does not
    define it (``from pkg import mod`` is fine where `pkg/mod.py` exists)."""
    resolver = resolver or _Resolver()
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ImportFrom) or node.level or not node.module:
            continue
        if node.module.split(".")[0] not in PACKAGES:
            continue
        defined = resolver.names(node.module)
        if defined is None:  # not a file of ours (or a module-level __getattr__ decides)
            continue
        for alias in node.names:
            sub = f"{node.module}.{alias.name}"
            if alias.name != "*" and alias.name not in defined and not resolver.exists(sub):
                found.append(sub)
    return found


class _Resolver:
    """Each project module's top-level names, read once."""

    def __init__(self) -> None:
        self._names: dict[str, set[str] | None] = {}

    def exists(self, module: str) -> bool:
        return module_path(module) is not None

    def names(self, module: str) -> set[str] | None:
        if module not in self._names:
            path = module_path(module)
            bound = None if path is None else _bound(ast.parse(path.read_text()).body)
            self._names[module] = None if bound is None or "__getattr__" in bound else bound
        return self._names[module]


def test_the_check_finds_a_missing_name_and_passes_real_ones() -> None:
    assert missing_names("from bgremove.batch_stages import resolve_u2net\n") == [
        "bgremove.batch_stages.resolve_u2net"
    ]
    ok = (
        "from bgremove.batch_stages import resolve_tier\n"  # a def
        "from models import registry\n"  # a submodule
        "from models.registry import TIERS\n"  # an assignment
        "from numpy import nonexistent_but_not_ours\n"
    )
    assert missing_names(ok) == []


@pytest.mark.parametrize("folder", PACKAGES)
def test_every_project_import_names_something_that_exists(folder: str) -> None:
    resolver = _Resolver()
    found = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in project_files()
        if path.relative_to(ROOT).parts[0] == folder
        for name in missing_names(path.read_text(), resolver)
    ]
    assert not found, found
