"""What a folder holds for ``bgremove p``: its images, their outputs, what is due.

Which files count (an image extension the decoder reads, hidden ones skipped, the output
folder never walked), where each result goes (the same relative path under the output
folder, the result format's extension), which inputs collide on one output, and the resume
rule (an output at least as new as its input is done).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from imaging.formats import IMAGE_SUFFIXES

Stamp = tuple[int, int]
"""(mtime_ns, size) of a file: what changes when it is rewritten."""


@dataclass(frozen=True)
class Task:
    """One input image and where its result goes."""

    source: Path
    target: Path
    #: the input's path relative to the input folder, for messages
    name: str
    stamp: Stamp


@dataclass
class Scan:
    """What a folder holds: images to consider, and what was left aside."""

    tasks: list[Task] = field(default_factory=list)
    ignored: int = 0
    #: inputs whose output another input (named) already claims
    collisions: list[tuple[Task, str]] = field(default_factory=list)


def _stamp(path: Path) -> Stamp | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def _walk(root: Path, recursive: bool, skip: Path | None) -> Iterator[Path]:
    """Files under ``root`` in name order, hidden ones and the folder ``skip`` left out."""
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(
            d
            for d in dirnames
            if recursive and not d.startswith(".") and (skip is None or here / d != skip)
        )
        for name in sorted(filenames):
            if not name.startswith("."):
                yield here / name


def scan(source_dir: Path, target_dir: Path, *, recursive: bool, suffix: str) -> Scan:
    """The images under ``source_dir`` and their outputs under ``target_dir``."""
    result = Scan()
    claimed: dict[Path, str] = {}
    skip = target_dir.resolve()
    root = source_dir.resolve()
    for path in _walk(root, recursive, skip):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            result.ignored += 1
            continue
        stamp = _stamp(path)
        if stamp is None or not path.is_file():  # gone since listed, or not a file
            continue
        rel = path.relative_to(root)
        task = Task(path, target_dir / rel.with_suffix(suffix), rel.as_posix(), stamp)
        owner = claimed.setdefault(task.target, task.name)
        if owner != task.name:  # a.jpg and a.png both -> a.png
            result.collisions.append((task, owner))
        else:
            result.tasks.append(task)
    return result


def up_to_date(task: Task) -> bool:
    """Whether the task's output exists and is at least as new as its input."""
    out = _stamp(task.target)
    return out is not None and out[0] >= task.stamp[0]


def collision_reason(task: Task, owner: str) -> str:
    return f"[output_collision] its output {task.target} is {owner}'s too"
