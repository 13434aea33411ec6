"""README.md stays a short front page that keeps the migration guide's promises.

The reference lives in docs/; the README must still show a newcomer the two commands,
the guide's endpoints, header, settings and test commands word for word, the RMBG-2.0
licence, and where every docs page is.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"

#: the front page's budget (rembg's README is 13 KB)
MAX_BYTES = 12 * 1024

#: what the migration guide and CI rely on finding in the README, verbatim
PROMISES = [
    "scripts/run.sh",
    "scripts/test.sh",
    "POST /api/v1/remove-background",
    "GET /api/v1/health",
    "X-Model-Used",
    "BG_REMOVAL_MODEL",
    "BG_REMOVAL_DEVICE",
    "BG_REMOVAL_FALLBACK",
    "python scripts/test_rmbg2_quick.py",
    "python scripts/benchmark_comparison.py",
    "pytest tests/test_rmbg2.py -v",
    "CC BY-NC 4.0",
    "docs/coming-from-rembg.md",
    "docs/coming-from-removebg.md",
]


#: the health document's fields the migration guide reads; the README names them and
#: docs/api.md shows them in its example document
HEALTH_FIELDS = ["status", "model_name", "model_loaded", "device", "gpu_available", "gpu_name"]


def test_readme_is_short() -> None:
    size = README.stat().st_size
    assert size <= MAX_BYTES, f"README.md is {size} bytes; move reference material to docs/"


@pytest.mark.parametrize("promise", PROMISES)
def test_readme_keeps_the_guides_promises(promise: str) -> None:
    assert promise in README.read_text(encoding="utf-8")


def test_readme_links_every_docs_page() -> None:
    text = README.read_text(encoding="utf-8")
    pages = sorted((ROOT / "docs").glob("*.md"))
    assert pages
    missing = [p.name for p in pages if f"(docs/{p.name})" not in text]
    assert missing == [], f"pages the README does not list: {missing}"


@pytest.mark.parametrize("field", HEALTH_FIELDS)
def test_health_fields_stay_findable(field: str) -> None:
    assert f"`{field}`" in README.read_text(encoding="utf-8")
    api = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    assert f'"{field}":' in api, f"docs/api.md's health example lacks {field}"
