"""The project's own Python files, for the checks that read the source instead of running it."""

from __future__ import annotations

import subprocess
from pathlib import Path

#: the checkout
ROOT = Path(__file__).resolve().parents[2]
#: the project's importable top-level folders (each file is `folder.module`)
PACKAGES = ("benchmarks", "bgremove", "deployments", "imaging", "models", "scripts", "tests")


def project_files() -> list[Path]:
    """The project's Python files git knows of (tracked, or new and not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [ROOT / name for name in listed if name.split("/")[0] in PACKAGES]


def module_path(module: str) -> Path | None:
    """The file of a project module (`pkg.mod` or a package's `__init__`), None if none."""
    base = ROOT.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def module_name(path: Path) -> str:
    """`pkg.mod` of a project file (a package's `__init__.py` is the package)."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
