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


@dataclass
class FileServer:
    """`file_server`'s base URL and the paths it was asked for, in order."""

    base: str
    served: list[str] = field(default_factory=list)


@contextmanager
def file_server(body: bytes, content_type: str = "image/jpeg") -> Iterator[FileServer]:
    """Answer every GET on 127.0.0.1 (a free port) with ``body``, whatever the path (the
    decoder, not the name, decides what it is): the image behind the URLs that the service
    fetches in the tests. Records each path asked for."""
    server_state = FileServer("")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            server_state.served.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server_state.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server_state
    finally:
        server.shutdown()
        server.server_close()
