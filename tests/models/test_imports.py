"""`models/` imports one way: no module imports, at the top or inside a function, a module
that imports it back. A circle hidden in a function import breaks the day someone moves
that import up, and makes "which module is below which" unanswerable."""

from __future__ import annotations

import ast
from pathlib import Path

MODELS = Path(__file__).resolve().parents[2] / "models"


def _imported(tree: ast.AST, known: set[str]) -> set[str]:
    """The `models.*` modules a module's code imports anywhere (functions, TYPE_CHECKING)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            base = f"models.{module}".rstrip(".") if node.level else module
            # `from models import x` may name a module; `from models.x import y` names one
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {name for name in names if name in known}
    return found


def import_graph(folder: Path = MODELS) -> dict[str, set[str]]:
    """module -> the `models.*` modules it imports."""
    paths = {f"models.{p.stem}": p for p in folder.glob("*.py") if p.stem != "__init__"}
    return {
        name: _imported(ast.parse(path.read_text(), str(path)), set(paths)) - {name}
        for name, path in paths.items()
    }


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each import circle once, as the path that closes it (a -> b -> a)."""
    found: list[list[str]] = []
    seen: set[frozenset[str]] = set()

    def walk(path: list[str]) -> None:
        for nxt in sorted(graph[path[-1]]):
            if nxt == path[0]:
                if frozenset(path) not in seen:
                    seen.add(frozenset(path))
                    found.append([*path, nxt])
            elif nxt not in path and nxt > path[0]:  # each circle from its smallest module
                walk([*path, nxt])

    for start in sorted(graph):
        walk([start])
    return found


def test_the_finder_sees_circles_through_function_imports() -> None:
    a = ast.parse("def f():\n    from models.b import g\n")
    b = ast.parse("from models import a\n")
    known = {"models.a", "models.b"}
    graph = {"models.a": _imported(a, known), "models.b": _imported(b, known)}
    assert circles(graph) == [["models.a", "models.b", "models.a"]]


def test_models_import_one_way() -> None:
    graph = import_graph()
    assert "models.rmbg_transforms" in graph["models.rmbg_openvino"]
    found = circles(graph)
    assert not found, "import circles in models/:\n" + "\n".join(" -> ".join(c) for c in found)
