"""A local HTTP server that answers `bgremove --url` with scripted responses.

The real service cannot be made to answer 503 + Retry-After or 401 on demand, so tests that
need those answers put this server in front of (or in place of) it; the client under test
stays the real one.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Request:
    """A POST the server received."""

    path: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Reply:
    """What the server sends back; `headers` go after Content-Type and Content-Length."""

    status: int
    payload: bytes
    content_type: str
    headers: Mapping[str, str] = field(default_factory=dict)


def error_reply(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> Reply:
    """An error in the service's JSON shape, which the client reads its code and message from."""
    payload = json.dumps({"error": {"code": code, "message": message}}).encode()
    return Reply(status, payload, "application/json", headers or {})


Answer = Callable[[Request], Reply]


@contextmanager
def stub_server(answer: Answer) -> Iterator[str]:
    """Serve POSTs with `answer` on 127.0.0.1 (a free port), one thread per request; yield
    the base URL and stop the server on exit."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            reply = answer(Request(self.path, dict(self.headers), body))
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.payload)))
            for key, value in reply.headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(reply.payload)

        def log_message(self, *args: object) -> None:
            pass  # keep test output free of access logs

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    # a short poll interval so that shutdown() returns quickly
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
