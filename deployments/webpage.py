"""The web page served at the app's root: one self-contained HTML file from package data.

The page is read once (from a checkout or an installed wheel alike) and served with
a strict Content-Security-Policy: its one inline script and one inline style are
allowed by their SHA-256 hashes, so no other script or style can run, injected or not.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from types import MappingProxyType

from fastapi.responses import HTMLResponse

#: The inline `<script>` and `<style>` elements; their text is what browsers hash.
_INLINE = re.compile(r"<(script|style)\b[^>]*>(.*?)</\1\s*>", re.DOTALL | re.IGNORECASE)


@dataclass(frozen=True)
class WebPage:
    """The page's HTML and the headers it is served with."""

    html: str
    headers: Mapping[str, str]


def content_security_policy(html: str) -> str:
    """A policy allowing only the page's own inline script and style, by hash."""
    hashes: dict[str, list[str]] = {"script": [], "style": []}
    for tag, text in _INLINE.findall(html):
        digest = base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode()
        hashes[tag.lower()].append(f"'sha256-{digest}'")
    script = " ".join(hashes["script"]) or "'none'"
    style = " ".join(hashes["style"]) or "'none'"
    return (
        "default-src 'self'; "
        f"script-src {script}; "
        f"style-src {style}; "
        "img-src 'self' blob: data:; "
        "connect-src 'self'; "
        "object-src 'none'; "
        "base-uri 'none'; "
        "form-action 'none'; "
        "frame-ancestors 'none'"
    )


@cache
def web_page() -> WebPage:
    """The page, read from `deployments/web/index.html` once per process."""
    html = (files("deployments") / "web" / "index.html").read_text(encoding="utf-8")
    headers = {
        "Content-Security-Policy": content_security_policy(html),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        # small, and a new release may change it: revalidate rather than cache stale JS
        "Cache-Control": "no-cache",
    }
    return WebPage(html=html, headers=MappingProxyType(headers))


def web_page_response() -> HTMLResponse:
    """A fresh response for the cached page (responses are mutable, so not shared)."""
    page = web_page()
    return HTMLResponse(page.html, headers=dict(page.headers))
