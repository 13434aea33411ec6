"""Relative links in README.md and docs/: every file exists, every #anchor is a heading.

GitHub renders these pages; a moved section or a renamed file leaves a link that leads
nowhere, which nobody notices by reading. External http(s) links are not fetched.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: `[text](target)` and `![alt](target)`, with an optional "title"
_INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
#: `[label]: target` reference definitions
_REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.MULTILINE)
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_HTML_ANCHOR = re.compile(r"<a\s[^>]*(?:name|id)=\"([^\"]+)\"", re.IGNORECASE)
_FENCE = re.compile(r"^\s{0,3}(```|~~~)")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def markdown_files(root: Path = ROOT) -> list[Path]:
    """README.md and every page under docs/."""
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """One case per page, listed at collection (not at import)."""
    if "markdown_file" in metafunc.fixturenames:
        files = markdown_files()
        ids = [path.relative_to(ROOT).as_posix() for path in files]
        metafunc.parametrize("markdown_file", files, ids=ids)


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks: a `# comment` in a shell block is no
    heading, and `[x](y)` in code is no link."""
    lines = []
    fence: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        match = _FENCE.match(line)
        if match and (fence is None or match.group(1) == fence):
            fence = match.group(1) if fence is None else None
            continue
        if fence is None:
            lines.append((number, line))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text in lower case, punctuation other
    than `-` and `_` dropped, each space turned into `-`."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links: their text
    text = text.replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every anchor a page offers: its headings' slugs (a repeated one gets `-1`, `-2`, ...,
    as on GitHub) and explicit `<a name=...>`/`id=...` anchors."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for _, line in prose_lines(text):
        match = _HEADING.match(line)
        if match:
            base = slug(match.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
        found.update(_HTML_ANCHOR.findall(line))
    return found


def links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every link and image outside code."""
    found = []
    for number, line in prose_lines(text):
        line = _CODE_SPAN.sub("", line)
        found += [(number, target) for target in _INLINE_LINK.findall(line)]
        found += [(number, target) for target in _REFERENCE.findall(line)]
    return found


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """What is wrong with ``page``'s relative links, one line each (empty: nothing)."""
    problems = []
    text = page.read_text(encoding="utf-8")
    for number, target in links(text):
        if _SCHEME.match(target) or target.startswith("//"):
            continue  # external (http, https, mailto): not fetched
        where = f"{page.relative_to(root).as_posix()}:{number}: {target}"
        path_part, _, anchor = target.partition("#")
        resolved = (page.parent / unquote(path_part)).resolve() if path_part else page
        if not resolved.is_relative_to(root.resolve()):
            problems.append(f"{where}: leads outside the repository")
            continue
        if not resolved.exists():
            problems.append(f"{where}: no such file")
            continue
        if anchor and resolved.suffix == ".md":
            offered = anchors(resolved.read_text(encoding="utf-8"))
            if unquote(anchor).lower() not in offered:
                problems.append(f"{where}: no heading with anchor #{anchor}")
    return problems


def test_relative_links_resolve(markdown_file: Path) -> None:
    assert broken_links(markdown_file) == []


def test_the_checker_finds_broken_links(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "other.md").write_text("# Other page\n\n## Limits, backpressure and deadlines\n")
    (docs / "pic.png").write_bytes(b"")
    page = docs / "page.md"
    page.write_text(
        "# Page\n\n## Setup: the `.env` file\n\n"
        "[ok](other.md) [ok](other.md#limits-backpressure-and-deadlines) ![ok](pic.png)\n"
        "[ok](#setup-the-env-file) [external](https://example.com/missing.md)\n"
        "[gone](missing.md)\n"
        "[bad anchor](other.md#limits)\n"
        "![gone image](img/none.png)\n"
        "[bad local anchor](#nowhere)\n"
        "[outside](../../elsewhere.md)\n"
        "`[in code](missing-in-code.md)`\n"
        "```bash\n# not a heading\n[in a block](missing-in-block.md)\n```\n"
    )
    assert broken_links(page, tmp_path) == [
        "docs/page.md:7: missing.md: no such file",
        "docs/page.md:8: other.md#limits: no heading with anchor #limits",
        "docs/page.md:9: img/none.png: no such file",
        "docs/page.md:10: #nowhere: no heading with anchor #nowhere",
        "docs/page.md:11: ../../elsewhere.md: leads outside the repository",
    ]


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("Limits, backpressure and deadlines", "limits-backpressure-and-deadlines"),
        ("Access: API keys, health, CORS", "access-api-keys-health-cors"),
        ("`bgremove batch` against `rembg p`", "bgremove-batch-against-rembg-p"),
        ("RMBG-2.0 model (BiRefNet)", "rmbg-20-model-birefnet"),
        ("U2-Net in INT8", "u2-net-in-int8"),
        ("The `.env` file", "the-env-file"),
        ("max_batch_size and [links](x.md)", "max_batch_size-and-links"),
    ],
)
def test_slug_follows_github(heading: str, anchor: str) -> None:
    assert slug(heading) == anchor


def test_repeated_headings_get_numbered_anchors() -> None:
    assert anchors("# A\n## Figures\n## Figures\n") == {"a", "figures", "figures-1"}
