"""The test suite's own layout, read from its source (nothing here imports a test module).

- No test module imports another test module or a conftest: what tests share lives in
  tests/support/ (helpers, constants) or in a conftest's fixtures, which pytest hands out.
- Only tests/support/shared.py names the shared data folder beside the checkout, and no
  module reads that data while it is imported: a missing folder is then one message from
  the `shared_data` check (tests/conftest.py), not an import error per module.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import shared

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
SUPPORT = "tests.support"
#: calls that read the file system (a path's methods, `open`, Pillow's and NumPy's loaders)
READS = {
    "read_bytes",
    "read_text",
    "open",
    "load",
    "iterdir",
    "glob",
    "rglob",
    "is_file",
    "is_dir",
    "exists",
    "stat",
}


def _sources() -> list[Path]:
    return sorted(TESTS.rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_modules(path: Path, tree: ast.Module) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in a file, relative ones resolved; a
    `from package import name` also yields `package.name` (it may be a module)."""
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            yield node.lineno, module
            for alias in node.names:
                yield node.lineno, f"{module}.{alias.name}"


def _is_test_code(module: str) -> bool:
    """A module of this suite other than tests/support/ (and the `tests` package itself)."""
    if module != "tests" and not module.startswith("tests."):
        return False
    return module != "tests" and module != SUPPORT and not module.startswith(SUPPORT + ".")


def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def test_the_suite_has_the_modules_this_file_checks() -> None:
    names = {p.relative_to(TESTS).as_posix() for p in _sources()}
    assert {"conftest.py", "support/shared.py", "models/test_u2net.py"} <= names
    assert len([n for n in names if Path(n).name.startswith("test_")]) > 40


def test_no_module_imports_a_test_module_or_a_conftest() -> None:
    """`from tests.models.test_u2net import X`, `import tests.cli.conftest`, `from . import
    test_x` or `from tests.imaging import _png`: each one a failure naming file and line."""
    found: dict[str, str] = {}
    for path in _sources():
        for line, module in _imported_modules(path, _parse(path)):
            if _is_test_code(module):
                # `from tests.x import y` yields `tests.x` first: one report per line
                found.setdefault(f"{path.relative_to(ROOT)}:{line}", module)
    report = [f"{where} imports {module}" for where, module in sorted(found.items())]
    assert not report, "helpers belong in tests/support/:\n" + "\n".join(report)


@pytest.mark.parametrize(
    ("source", "offending"),
    [
        ("from tests.models.test_u2net import MAD_MAX\n", "tests.models.test_u2net"),
        ("import tests.cli.conftest\n", "tests.cli.conftest"),
        ("from tests.batch.conftest import PHOTOS\n", "tests.batch.conftest"),
        ("from . import test_api\n", "tests.service.test_api"),
        ("from .conftest import IMAGES\n", "tests.service.conftest"),
        ("from tests.imaging import _png\n", "tests.imaging._png"),
    ],
    ids=[
        "test-module",
        "import-conftest",
        "from-conftest",
        "relative-test-module",
        "relative-conftest",
        "private-helper",
    ],
)
def test_the_import_check_catches(source: str, offending: str) -> None:
    path = TESTS / "service" / "test_example.py"
    modules = {m for _, m in _imported_modules(path, ast.parse(source))}
    assert offending in modules and _is_test_code(offending)


@pytest.mark.parametrize(
    "source",
    [
        "from tests.support.shared import IMAGES\n",
        "from tests.support import shared\n",
        "import tests.support.http\n",
        "from tests import support\n",
        "import pytest\nfrom models.u2net import U2NetPredictor\n",
    ],
    ids=["shared-names", "shared-module", "support-module", "support-package", "not-tests"],
)
def test_the_import_check_allows(source: str) -> None:
    path = TESTS / "service" / "test_example.py"
    assert not [m for _, m in _imported_modules(path, ast.parse(source)) if _is_test_code(m)]


def _names_the_shared_folder(node: ast.AST) -> bool:
    """`... / "shared"` or `... / "shared/images"`: a path built to the folder."""
    if not (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div)):
        return False
    right = node.right
    return (
        isinstance(right, ast.Constant)
        and isinstance(right.value, str)
        and right.value.strip("/").split("/")[0] == "shared"
    )


def test_only_support_shared_names_the_shared_folder() -> None:
    own = TESTS / "support" / "shared.py"
    found = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for path in _sources()
        if path != own
        for node in ast.walk(_parse(path))
        if _names_the_shared_folder(node)
    ]
    assert not found, "take the paths from tests/support/shared.py:\n" + "\n".join(found)


def _import_time_nodes(tree: ast.Module) -> Iterator[ast.AST]:
    """Every node that runs when the module is imported: module and class bodies,
    decorators, default values and annotations' neighbours; not function or lambda bodies."""
    stack: list[ast.AST] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            stack.extend(node.decorator_list)
            stack.extend(node.args.defaults)
            stack.extend(d for d in node.args.kw_defaults if d is not None)
            continue
        if isinstance(node, ast.Lambda):
            stack.extend(node.args.defaults)
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def _shared_names(tree: ast.Module) -> set[str]:
    """The local names bound to tests.support.shared or to anything imported from it."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "tests.support.shared":
            names.update(alias.asname or alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module == "tests.support":
            names.update(
                alias.asname or alias.name for alias in node.names if alias.name == "shared"
            )
        elif isinstance(node, ast.Import):
            names.update(
                (alias.asname or alias.name).split(".")[0]
                for alias in node.names
                if alias.name == "tests.support.shared"
            )
    return names


def _reads_at_import(tree: ast.Module) -> list[int]:
    """Lines where import-time code calls a reading function on something from shared."""
    names = _shared_names(tree)
    lines = []
    for node in _import_time_nodes(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if called not in READS:
            continue
        if any(isinstance(n, ast.Name) and n.id in names for n in ast.walk(node)):
            lines.append(node.lineno)
    return lines


def test_no_module_reads_the_shared_data_at_import() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in _sources()
        for line in _reads_at_import(_parse(path))
    ]
    assert not found, "read it in a fixture or a test (on first use):\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("source", "lines"),
    [
        ("from tests.support.shared import IMAGES\nPHOTO = (IMAGES / 'a.png').read_bytes()\n", [2]),
        ("from tests.support.shared import IMAGES\nPHOTOS = sorted(IMAGES.iterdir())\n", [2]),
        (
            "import pytest\nfrom tests.support import shared\n"
            "@pytest.mark.parametrize('p', list(shared.IMAGES.glob('*')))\n"
            "def test_x(p): pass\n",
            [3],
        ),
        (
            "from tests.support.shared import photo as p\nfrom PIL import Image\n"
            "I = Image.open(p('a'))\n",
            [3],
        ),
        ("from tests.support.shared import IMAGES\nPHOTO = IMAGES / 'a.png'\n", []),
        (
            "from tests.support.shared import IMAGES\n"
            "def f():\n    return (IMAGES / 'a').read_bytes()\n",
            [],
        ),
        ("from pathlib import Path\nTEXT = Path('pyproject.toml').read_text()\n", []),
    ],
    ids=[
        "read-bytes",
        "iterdir",
        "decorator-glob",
        "image-open",
        "path-only",
        "in-function",
        "not-shared",
    ],
)
def test_the_import_time_check(source: str, lines: list[int]) -> None:
    assert _reads_at_import(ast.parse(source)) == lines


# --- the one check of the shared data (tests/conftest.py runs it at collection) --------


def test_every_photo_and_file_the_tests_read_is_required() -> None:
    assert len(shared.PHOTO_NAMES) == 8 and list(shared.PHOTO_NAMES) == sorted(shared.PHOTO_NAMES)
    required = set(shared.REQUIRED)
    for path in (shared.U2NETP, *(shared.photo(n) for n in shared.PHOTO_NAMES)):
        assert path.relative_to(shared.ROOT).as_posix() in required


def test_a_missing_folder_is_one_message_saying_where_to_get_it(tmp_path: Path) -> None:
    message = shared.problem(tmp_path / "data")
    assert message is not None
    assert f"{tmp_path / 'data'} does not exist" in message
    assert "u2netp.onnx" in message and "kuberay" in message and "README.md" in message


def test_missing_files_are_listed_by_name(tmp_path: Path) -> None:
    for rel in shared.REQUIRED:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    assert shared.problem(tmp_path) is None
    (tmp_path / "images" / "horse.jpg").unlink()
    (tmp_path / "models" / "u2netp.onnx").unlink()
    message = shared.problem(tmp_path)
    assert message is not None
    assert "lacks 2 file(s):\n  images/horse.jpg\n  models/u2netp.onnx\n" in message
