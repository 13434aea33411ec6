"""Collecting the suite imports neither rembg nor pymatting.

Why: rembg imports pymatting, whose kernels numba compiles when the module is imported (eager
signatures): about 55 s of one core per process on a fresh install, until the cache in
site-packages exists. Both pytest workers import every test module while collecting, so one
top-level `from rembg ...` in a test module kept every fresh run (CI's) waiting ~40 s before
its first test, and compiled the kernels twice. Tests import rembg inside the fixture or test
that uses it. Read from the source: each module's top-level imports (under `if`, `try` and
`with` too, not under `if TYPE_CHECKING`), followed through the project's own modules.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping

from tests.support.sources import module_name, project_files

#: what collecting must not import
HEAVY = ("rembg", "pymatting")


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def top_level_imports(body: list[ast.stmt]) -> list[str]:
    """The modules a module body imports when it runs (functions and classes not entered)."""
    found: list[str] = []
    for node in body:
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            # `from pkg import mod` may import a submodule
            found += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.If) and not _type_checking(node.test):
            found += top_level_imports(node.body) + top_level_imports(node.orelse)
        elif isinstance(node, ast.Try):
            found += top_level_imports(node.body + node.orelse + node.finalbody)
            for handler in node.handlers:
                found += top_level_imports(handler.body)
        elif isinstance(node, ast.With):
            found += top_level_imports(node.body)
    return found


def import_map(sources: Mapping[str, str]) -> dict[str, list[str]]:
    """Each project module's top-level imports, from its source (parsed once)."""
    return {module: top_level_imports(ast.parse(text).body) for module, text in sources.items()}


def heavy_chain(start: str, imports: Mapping[str, list[str]]) -> list[str] | None:
    """The import path from project module ``start`` to a `HEAVY` module, None if none.

    ``imports`` is `import_map` of the project; importing `a.b.c` also runs the packages
    `a` and `a.b`."""
    seen: set[str] = set()

    def walk(path: list[str]) -> list[str] | None:
        module = path[-1]
        if module.split(".")[0] in HEAVY:
            return path
        if module in seen or module not in imports:
            return None
        seen.add(module)
        for name in imports[module]:
            parts = name.split(".")
            for depth in range(1, len(parts) + 1):
                if (found := walk([*path, ".".join(parts[:depth])])) is not None:
                    return found
        return None

    return walk([start])


def test_the_finder_follows_top_level_imports_only() -> None:
    sources = {
        "tests.test_a": "from tests.support import helper\n",
        "tests.support": "",
        "tests.support.helper": (
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    import rembg\n"
            "def f():\n    import pymatting\n"
            "try:\n    from rembg.bg import post_process\nexcept ImportError:\n    pass\n"
        ),
        "tests.test_b": "def f():\n    from rembg import remove\n",
    }
    imports = import_map(sources)
    assert heavy_chain("tests.test_a", imports) == [
        "tests.test_a",
        "tests.support.helper",
        "rembg",
    ]
    assert heavy_chain("tests.test_b", imports) is None


def test_collecting_the_suite_imports_no_rembg() -> None:
    files = project_files()
    imports = import_map({module_name(path): path.read_text() for path in files})
    collected = [
        module_name(path)
        for path in files
        if module_name(path).startswith("tests.")
        and (path.name.startswith("test_") or path.name == "conftest.py")
    ]
    assert len(collected) > 50, collected
    found = {m: chain for m in collected if (chain := heavy_chain(m, imports)) is not None}
    assert not found, "\n".join(" -> ".join(chain) for chain in found.values())
