"""The image URL fetcher against a real loopback HTTP(S) server, with stub DNS answers.

Nothing here may reach past loopback: `network_guard` (every test) records each connect
and system DNS lookup, refuses any to a non-loopback address or name, and fails the test
that tried one. Forbidden addresses are therefore proven refused before connecting, and the
happy path goes through the pinning: a stub resolver maps made-up names to 127.0.0.1,
which an allowlist network entry (127.0.0.1/32) opens.
"""

from __future__ import annotations

import asyncio
import datetime
import io
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from PIL import Image

from deployments.url_fetch import (
    MAX_URL_LENGTH,
    FetchConfig,
    UrlFetchError,
    UrlPolicy,
    _checked_addresses,
    _parse,
    address_class,
    fetch_image,
    system_resolver,
)
from imaging.errors import ImageTooLargeError


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGBA", (4, 3), (200, 30, 30, 255)).save(out, format="PNG")
    return out.getvalue()


PNG = _png()
SECRET = b"SECRET-INTERNAL-BODY-7731"
LOOPBACK = FetchConfig(UrlPolicy.ALLOWLIST, ("127.0.0.1/32",), max_bytes=100_000, timeout_s=5)
PUBLIC = FetchConfig(UrlPolicy.PUBLIC, max_bytes=100_000, timeout_s=5)


# --- the network guard -------------------------------------------------------------------


@dataclass
class Guard:
    connects: list[tuple[str, int]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def network_guard(monkeypatch: pytest.MonkeyPatch) -> Iterator[Guard]:
    """Record every connect and system DNS lookup; refuse (and fail on) non-loopback ones."""
    guard = Guard()
    connect, connect_ex, getaddrinfo = (
        socket.socket.connect,
        socket.socket.connect_ex,
        socket.getaddrinfo,
    )

    def check(sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            guard.connects.append((address[0], address[1]))
            if not _loopback(address[0]):
                guard.violations.append(f"connect to {address}")
                raise OSError(f"test guard: no connections outside loopback ({address})")

    def guarded_connect(sock: socket.socket, address: Any) -> None:
        check(sock, address)
        return connect(sock, address)

    def guarded_connect_ex(sock: socket.socket, address: Any) -> int:
        check(sock, address)
        return connect_ex(sock, address)

    def guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if not _loopback(name):
            guard.violations.append(f"system DNS lookup of {name}")
            raise socket.gaierror(socket.EAI_NONAME, "test guard: no DNS lookups")
        return getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", guarded_connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
    yield guard
    assert not guard.violations, f"the fetcher tried to leave loopback: {guard.violations}"


# --- the loopback server -----------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.server.seen.append((self.path, self.headers.get("Host", "")))
        path = self.path
        try:
            if path == "/image.png":
                self._send(200, PNG, {"Content-Type": "image/png"})
            elif path == "/missing":
                self._send(404, SECRET, {"Content-Type": "text/plain"})
            elif path.startswith("/redirect?to="):
                self._send(302, b"", {"Location": path.removeprefix("/redirect?to=")})
            elif path.startswith("/loop/"):
                self._send(302, b"", {"Location": f"/loop/{int(path[6:]) + 1}"})
            elif path == "/big-declared":
                self._send(200, b"x" * 10, {"Content-Length": str(10**9)})
            elif path == "/endless":  # chunked, no Content-Length, until the client hangs up
                self.send_response(200)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for _ in range(10_000):
                    self.wfile.write(b"4000\r\n" + b"x" * 0x4000 + b"\r\n")
            elif path == "/drip":  # a byte every 0.2 s
                self.send_response(200)
                self.send_header("Content-Length", "50")
                self.end_headers()
                for _ in range(50):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.2)
            else:
                self._send(500, b"no such route")
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass  # the fetcher hung up, as it should


class Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    tls: ssl.SSLContext | None = None

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.seen: list[tuple[str, str]] = []
        self.sni: list[str | None] = []

    @property
    def port(self) -> int:
        return self.server_address[1]

    def get_request(self) -> tuple[Any, Any]:
        sock, address = super().get_request()
        if self.tls is not None:  # the handshake happens in the handler's thread
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # refused TLS handshakes and hang-ups are part of the tests


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    srv = Server()
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


class StubResolver:
    """DNS answers by name; records each lookup."""

    def __init__(self, **answers: list[str] | Exception) -> None:
        self.answers = {name.replace("_", "."): answer for name, answer in answers.items()}
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        answer = self.answers[host]
        if isinstance(answer, Exception):
            raise answer
        return answer


def fetch(url: str, config: FetchConfig, resolver: StubResolver, **kwargs: Any) -> bytes:
    return asyncio.run(fetch_image(url, config, resolver=resolver, **kwargs))


def refused(url: str, config: FetchConfig, resolver: StubResolver, **kwargs: Any) -> UrlFetchError:
    with pytest.raises(UrlFetchError) as info:
        fetch(url, config, resolver, **kwargs)
    return info.value


# --- refusals before any connection ------------------------------------------------------


def test_policy_off_refuses_every_url_naming_the_setting(network_guard: Guard) -> None:
    resolver = StubResolver(images_test=["127.0.0.1"])
    error = refused("https://images.test/a.png", FetchConfig(), resolver)
    assert error.code == "url_fetch_disabled"
    assert "url_fetch" in error.message and "BG_REMOVAL_URL_FETCH" in error.message
    assert resolver.calls == [] and network_guard.connects == []


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("file:///etc/passwd", "url_invalid"),
        ("gopher://images.test:70/_GET", "url_invalid"),
        ("ftp://images.test/a.png", "url_invalid"),
        ("http://user:pass@images.test/a.png", "url_invalid"),
        ("http://user@images.test/a.png", "url_invalid"),
        ("http://2130706433/", "url_invalid"),  # decimal 127.0.0.1
        ("http://0177.0.0.1/", "url_invalid"),  # octal
        ("http://0x7f.0.0.1/", "url_invalid"),  # hex
        ("http://0x7f000001/", "url_invalid"),
        ("http://127.1/", "url_invalid"),  # short form
        ("http://1.2.3.4.5/", "url_invalid"),
        ("http://%31%32%37.0.0.1/", "url_invalid"),
        ("http://[fe80::1%25eth0]/", "url_invalid"),  # zone id
        ("http://[::1/", "url_invalid"),
        ("http:///a.png", "url_invalid"),  # no host
        ("http://images.test:0/", "url_invalid"),
        ("http://images.test:99999/", "url_invalid"),
        ("http://ima ges.test/", "url_invalid"),
        ("http://bücher.test/", "url_invalid"),
        ("http://images.test/" + "a" * MAX_URL_LENGTH, "url_invalid"),
        ("http://127.0.0.1/", "url_forbidden"),  # canonical literals: checked as addresses
        ("http://0.0.0.0/", "url_forbidden"),
        ("http://[::1]/", "url_forbidden"),
        ("http://[::ffff:127.0.0.1]/", "url_forbidden"),
        ("http://[::ffff:7f00:1]/", "url_forbidden"),
        ("http://169.254.169.254/latest/meta-data/", "url_forbidden"),
    ],
)
def test_url_forms_are_refused_before_any_lookup(url: str, code: str, network_guard: Guard) -> None:
    resolver = StubResolver()
    error = refused(url, PUBLIC, resolver)
    assert error.code == code, error.message
    assert resolver.calls == [] and network_guard.connects == []


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (["10.0.0.5"], "private"),
        (["172.16.3.4"], "private"),
        (["192.168.1.1"], "private"),
        (["fd12:3456::1"], "private"),
        (["127.0.0.1"], "loopback"),
        (["::1"], "loopback"),
        (["169.254.169.254"], "cloud metadata"),
        (["fd00:ec2::254"], "cloud metadata"),
        (["100.100.100.200"], "cloud metadata"),
        (["64:ff9b::a9fe:a9fe"], "cloud metadata"),  # NAT64 of 169.254.169.254
        (["::ffff:169.254.169.254"], "cloud metadata"),
        (["::ffff:127.0.0.1"], "IPv4-mapped"),
        (["64:ff9b::a00:5"], "NAT64"),
        (["64:ff9b:1::1"], "NAT64"),
        (["::10.0.0.5"], "IPv4-compatible"),
        (["2002:7f00:1::1"], "6to4 address embedding a loopback"),
        (["2001:0:4136:e378:8000:63bf:3fff:fdd2"], "Teredo"),
        (["100.64.0.1"], "CGNAT"),
        (["169.254.10.1"], "link-local"),
        (["fe80::1%eth0"], "link-local"),
        (["224.0.0.1"], "multicast"),
        (["ff02::1"], "multicast"),
        (["0.0.0.0"], "unspecified"),
        (["::"], "unspecified"),
        (["255.255.255.255"], "reserved"),
        (["240.0.0.1"], "reserved"),
        (["192.0.2.10"], "documentation"),
        (["2001:db8::1"], "documentation"),
        (["198.18.0.1"], "benchmarking"),
        (["93.184.215.14", "10.0.0.5"], "private"),  # one bad address among good ones
        (["2606:4700::1111", "::1"], "loopback"),
    ],
)
def test_forbidden_addresses_are_refused_before_connecting(
    answer: list[str], reason: str, network_guard: Guard
) -> None:
    resolver = StubResolver(images_test=answer)
    error = refused("http://images.test/a.png", PUBLIC, resolver)
    assert error.code == "url_forbidden"
    assert "resolves to a" in error.message and reason in error.message, error.message
    assert all(a.split("%")[0] not in error.message for a in answer if len(a) > 4)
    assert resolver.calls == ["images.test"] and network_guard.connects == []


def test_public_addresses_pass_the_address_check() -> None:
    for address in ["93.184.215.14", "8.8.8.8", "2606:4700::1111", "2002:808:808::1"]:
        assert address_class(ipaddress.ip_address(address)) is None, address


def test_allowlist_names_networks_and_what_they_open() -> None:
    """The address check alone (no fetch: the public answers here must not be connected to)."""
    config = FetchConfig(UrlPolicy.ALLOWLIST, ("cdn.example.test", ".imgs.test", "10.20.0.0/16"))
    resolver = StubResolver(
        cdn_example_test=["93.184.215.14"],
        a_imgs_test=["93.184.215.15"],
        imgs_test=["93.184.215.16"],
        other_test=["93.184.215.17"],
        internal_test=["10.20.1.2"],
        loop_imgs_test=["127.0.0.1"],
        meta_test=["169.254.169.254"],
        link_test=["169.254.10.1"],
    )

    def check(url: str, config: FetchConfig = config) -> list[str]:
        target = _parse(url, "the image URL")
        return asyncio.run(_checked_addresses(target, config, resolver, "the image URL"))

    assert check("https://cdn.example.test/a.png") == ["93.184.215.14"]
    assert check("https://a.imgs.test/a.png") == ["93.184.215.15"]
    assert check("http://internal.test:8080/a.png") == ["10.20.1.2"]  # a network entry opens it
    assert check("http://10.20.3.4/a.png") == ["10.20.3.4"]
    for url, why in [
        ("https://imgs.test/", "not on url_fetch_allowlist"),  # a .suffix is not the apex
        ("https://other.test/", "not on url_fetch_allowlist"),
        ("http://93.184.215.14/", "not on url_fetch_allowlist"),
        ("https://loop.imgs.test/", "loopback"),  # a listed name never reaches loopback
        ("https://meta.test/", "cloud metadata"),
    ]:
        with pytest.raises(UrlFetchError, match=why):
            check(url)
    link_local = FetchConfig(UrlPolicy.ALLOWLIST, ("169.254.0.0/16",))
    assert check("http://link.test/", link_local) == ["169.254.10.1"]
    with pytest.raises(UrlFetchError, match="cloud metadata"):  # never, even when listed
        check("http://meta.test/", link_local)


def test_config_refuses_bad_allowlists() -> None:
    with pytest.raises(ValueError, match=r"url_fetch_allowlist entry '10\.0\.0\.1/8'"):
        FetchConfig(UrlPolicy.PUBLIC, ("10.0.0.1/8",))
    with pytest.raises(ValueError, match="entry 'http://cdn"):
        FetchConfig(UrlPolicy.PUBLIC, ("http://cdn.example.test",))
    with pytest.raises(ValueError, match="at least one url_fetch_allowlist entry"):
        FetchConfig(UrlPolicy.ALLOWLIST)
    assert FetchConfig("public", ["cdn.example.test"]).policy is UrlPolicy.PUBLIC  # as settings


@pytest.mark.parametrize("answer", [socket.gaierror(socket.EAI_NONAME, "no such name"), []])
def test_unresolvable_names(answer: Any, network_guard: Guard) -> None:
    error = refused("http://nowhere.test/a.png", PUBLIC, StubResolver(nowhere_test=answer))
    assert error.code == "url_unresolvable" and "nowhere.test" in error.message
    assert network_guard.connects == []


def test_system_resolver_takes_literals_without_dns() -> None:
    assert asyncio.run(system_resolver("127.0.0.1", 80)) == ["127.0.0.1"]


# --- fetches from the loopback server ----------------------------------------------------


def test_fetch_connects_to_the_checked_address_with_the_name_as_host(
    server: Server, network_guard: Guard
) -> None:
    resolver = StubResolver(images_test=["127.0.0.1"])
    server.seen.clear()
    assert fetch(f"http://images.test:{server.port}/image.png", LOOPBACK, resolver) == PNG
    assert server.seen == [("/image.png", f"images.test:{server.port}")]
    assert resolver.calls == ["images.test"], "one lookup, and the HTTP client made none"
    assert network_guard.connects == [("127.0.0.1", server.port)]


def test_fetch_tries_the_next_checked_address(server: Server, network_guard: Guard) -> None:
    config = FetchConfig(UrlPolicy.ALLOWLIST, ("127.0.0.0/8",), timeout_s=5)
    resolver = StubResolver(images_test=["127.0.0.2", "127.0.0.1"])  # nothing on 127.0.0.2
    assert fetch(f"http://images.test:{server.port}/image.png", config, resolver) == PNG
    assert network_guard.connects == [("127.0.0.2", server.port), ("127.0.0.1", server.port)]


def test_redirects_are_followed_and_each_hop_resolved_once(server: Server) -> None:
    resolver = StubResolver(images_test=["127.0.0.1"], other_test=["127.0.0.1"])
    server.seen.clear()
    url = f"http://images.test:{server.port}/redirect?to=http://other.test:{server.port}/image.png"
    assert fetch(url, LOOPBACK, resolver) == PNG
    assert resolver.calls == ["images.test", "other.test"]
    hosts = [f"images.test:{server.port}", f"other.test:{server.port}"]
    assert [host for _, host in server.seen] == hosts


@pytest.mark.parametrize(
    "target", ["http://metadata.test/latest/meta-data/", "http://169.254.169.254/latest/"]
)
def test_a_redirect_to_a_forbidden_address_is_refused_without_connecting(
    target: str, server: Server, network_guard: Guard
) -> None:
    resolver = StubResolver(images_test=["127.0.0.1"], metadata_test=["169.254.169.254"])
    error = refused(f"http://images.test:{server.port}/redirect?to={target}", LOOPBACK, resolver)
    assert error.code == "url_forbidden" and "redirect 1" in error.message
    assert "cloud metadata" in error.message
    assert {host for host, _ in network_guard.connects} == {"127.0.0.1"}


def test_redirects_are_capped(server: Server) -> None:
    resolver = StubResolver(images_test=["127.0.0.1"])
    server.seen.clear()
    error = refused(f"http://images.test:{server.port}/loop/0", LOOPBACK, resolver)
    assert error.code == "url_too_many_redirects" and "more than 5" in error.message
    assert [path for path, _ in server.seen] == [f"/loop/{n}" for n in range(6)]
    assert resolver.calls == ["images.test"] * 6, "each hop is resolved and checked again"


def test_a_declared_size_over_the_cap_is_refused_before_reading(server: Server) -> None:
    resolver = StubResolver(images_test=["127.0.0.1"])
    error = refused(f"http://images.test:{server.port}/big-declared", LOOPBACK, resolver)
    assert isinstance(error, ImageTooLargeError) and error.code == "url_too_large"
    assert "1000000000 bytes" in error.message and "100000" in error.message


def test_a_streamed_body_stops_at_the_cap(server: Server) -> None:
    resolver = StubResolver(images_test=["127.0.0.1"])
    started = time.monotonic()
    error = refused(f"http://images.test:{server.port}/endless", LOOPBACK, resolver)
    assert isinstance(error, ImageTooLargeError) and "more than the limit" in error.message
    assert time.monotonic() - started < 2, "it stopped reading at the cap"


def test_a_slow_drip_hits_the_one_deadline(server: Server) -> None:
    config = FetchConfig(UrlPolicy.ALLOWLIST, ("127.0.0.1/32",), timeout_s=1)
    resolver = StubResolver(images_test=["127.0.0.1"])
    started = time.monotonic()
    error = refused(f"http://images.test:{server.port}/drip", config, resolver)
    assert error.code == "url_timeout" and "more than 1 s" in error.message
    assert 0.9 < time.monotonic() - started < 2


def test_an_error_status_is_named_and_its_body_not_echoed(server: Server) -> None:
    resolver = StubResolver(images_test=["127.0.0.1"])
    error = refused(f"http://images.test:{server.port}/missing", LOOPBACK, resolver)
    assert error.code == "url_http_status" and "404" in error.message
    assert SECRET.decode() not in error.message


def test_a_closed_port_is_unreachable_without_naming_the_address() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    error = refused(
        f"http://images.test:{port}/", LOOPBACK, StubResolver(images_test=["127.0.0.1"])
    )
    assert error.code == "url_unreachable" and "images.test" in error.message
    assert "127.0.0.1" not in error.message


# --- TLS: the certificate is checked against the name, on the pinned address --------------


def _certificate(name: str) -> tuple[bytes, bytes]:
    """A self-signed certificate for `name` and its key, PEM."""
    pytest.importorskip("cryptography")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    cert, key = _certificate("images.test")
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert)
    (folder / "key.pem").write_bytes(key)
    srv = Server()
    srv.tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    srv.tls.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    srv.tls.sni_callback = lambda sock, name, ctx: srv.sni.append(name)  # type: ignore[assignment]
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv, cert.decode()
    srv.shutdown()
    srv.server_close()


def test_tls_verifies_the_name_on_the_pinned_address(tls_server: tuple[Server, str]) -> None:
    server, ca = tls_server
    resolver = StubResolver(images_test=["127.0.0.1"], other_test=["127.0.0.1"])
    context = ssl.create_default_context(cadata=ca)
    url = f"https://images.test:{server.port}/image.png"
    assert fetch(url, LOOPBACK, resolver, ssl_context=context) == PNG
    assert server.sni == ["images.test"], "SNI is the name, not the pinned IP"
    # same address, same certificate, another name: the certificate does not match it
    error = refused(
        f"https://other.test:{server.port}/image.png",
        LOOPBACK,
        resolver,
        ssl_context=ssl.create_default_context(cadata=ca),
    )
    assert error.code == "url_unreachable" and "no TLS certificate valid" in error.message
    assert resolver.calls == ["images.test", "other.test"]
