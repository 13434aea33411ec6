"""Fetch an image by URL without handing clients the service's network position (SSRF).

Each hop (the URL, then every redirect, at most `max_redirects`) is checked from scratch:
http or https, no user:pass@, a host name or a canonical IP literal (127.1, 2130706433,
0x7f.0.0.1 and IPv6 zones are refused, not guessed at), any port (the address decides what
is reachable, not the port). The name is resolved once, every address is checked, and the
connection goes to a checked address only (`_PinnedBackend`): no second lookup, so DNS
rebinding cannot swap the address; TLS still verifies the certificate for the host name,
which httpcore passes to start_tls as server_hostname, and Host is the name too. One
deadline (`timeout_s`) covers resolving, connecting, redirects and a slowly dripped body,
which is read up to `max_bytes` and never further. Content-Type is not checked: the image
decoder refuses what is not an image, whatever the server calls it.

Policies (`url_fetch`, env BG_REMOVAL_URL_FETCH): `off` (the default) refuses every URL;
`public` fetches from public addresses only; `allowlist` only from the host names,
.suffixes (subdomains, not the apex) and networks in `url_fetch_allowlist`. A listed name
still never reaches a forbidden address; a network entry (10.20.0.0/16) does, for operators
whose images live on an internal network, except cloud metadata addresses: never those.
Off by default: a URL fetcher lets any client send requests from inside the operator's
network, which the operator should choose to allow. rembg's server fetches any URL by
default, but it is a local tool; this service is deployed next to other infrastructure.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import re
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any, NamedTuple
from urllib.parse import urljoin, urlsplit

import httpcore

from imaging.errors import ImageError, ImageTooLargeError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: (host, port) -> every address the host name resolves to, as strings
Resolver = Callable[[str, int], Awaitable[Iterable[str]]]

MAX_URL_LENGTH = 2048
_NAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*")
#: AWS/GCP/Azure/OpenStack, AWS ECS, AWS IPv6, Alibaba, Azure's wire server
_METADATA = {ipaddress.ip_address(a) for a in ("169.254.169.254", "169.254.170.2")}
_METADATA |= {
    ipaddress.ip_address(a) for a in ("fd00:ec2::254", "100.100.100.200", "168.63.129.16")
}
_V4_TRANSLATED = tuple(map(ipaddress.ip_network, ["64:ff9b::/96", "::/96", "::ffff:0:0:0/96"]))
#: forbidden networks the `ipaddress` properties do not name, or name only in some versions
_SPECIAL = tuple(
    (phrase, ipaddress.ip_network(net))
    for phrase, nets in {
        "a shared (CGNAT)": "100.64.0.0/10",
        "an IPv4-mapped": "::ffff:0:0/96",
        "an IPv4-compatible or -translated": "::/96 ::ffff:0:0:0/96",
        "a NAT64": "64:ff9b::/96 64:ff9b:1::/48",
        "a Teredo": "2001::/32",
        "a documentation": "192.0.2.0/24 198.51.100.0/24 203.0.113.0/24 2001:db8::/32 3fff::/20",
        "a benchmarking": "198.18.0.0/15 2001:2::/48",
        "a reserved": "0.0.0.0/8 240.0.0.0/4 192.0.0.0/24 192.88.99.0/24 100::/64 fec0::/10",
    }.items()
    for net in nets.split()
)


class UrlPolicy(str, Enum):
    """The `url_fetch` setting: which image URLs the service fetches."""

    OFF = "off"
    PUBLIC = "public"
    ALLOWLIST = "allowlist"


class UrlFetchError(ImageError):
    """An image URL refused or not fetched (HTTP 400); `code` names why, stably."""

    code = "url_fetch_failed"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code or self.code


class UrlImageTooLargeError(UrlFetchError, ImageTooLargeError):
    """The image behind the URL has more bytes than the upload limit (HTTP 413)."""

    code = "url_too_large"


class _Allowlist(NamedTuple):
    names: frozenset[str]
    suffixes: tuple[str, ...]
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


@functools.lru_cache(maxsize=16)
def _allowlist(entries: tuple[str, ...]) -> _Allowlist:
    names: set[str] = set()
    suffixes: set[str] = set()
    networks = []
    for raw in entries:
        entry = raw.strip().lower().rstrip(".")
        try:
            networks.append(ipaddress.ip_network(entry))
        except ValueError:
            if not _NAME.fullmatch(entry.removeprefix(".")) or _ends_in_number(entry):
                raise ValueError(
                    f"url_fetch_allowlist entry {raw!r} is neither a host name "
                    "(cdn.example.com), a suffix (.example.com) nor a network (10.0.0.0/8)"
                ) from None
            (suffixes if entry.startswith(".") else names).add(entry)
    return _Allowlist(frozenset(names), tuple(sorted(suffixes)), tuple(networks))


@dataclass(frozen=True)
class FetchConfig:
    """What may be fetched and how much; `max_bytes` is the upload limit."""

    policy: UrlPolicy = UrlPolicy.OFF
    allowlist: tuple[str, ...] = ()
    max_bytes: int = 25 * 1024 * 1024
    timeout_s: float = 10.0
    max_redirects: int = 5
    connect_timeout_s: float = 5.0
    user_agent: str = "bg-removal-service (image URL fetch)"

    def __post_init__(self) -> None:
        object.__setattr__(self, "policy", UrlPolicy(self.policy))  # "public" from settings
        object.__setattr__(self, "allowlist", tuple(self.allowlist))
        _allowlist(self.allowlist)  # refuse a bad entry when the settings load
        if self.policy is UrlPolicy.ALLOWLIST and not self.allowlist:
            raise ValueError("url_fetch=allowlist needs at least one url_fetch_allowlist entry")


def _ends_in_number(host: str) -> bool:
    """Whether browsers would read `host` as an IPv4 address (WHATWG "ends in a number")."""
    last = host.rsplit(".", 1)[-1]
    return last.isdigit() or re.fullmatch(r"0x[0-9a-f]*", last) is not None


def _embedded_v4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    if ip.version == 4:
        return None
    if ip.ipv4_mapped or ip.sixtofour or ip.teredo:
        return ip.ipv4_mapped or ip.sixtofour or ip.teredo[1]
    if any(ip in net for net in _V4_TRANSLATED):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_class(ip: IPAddress) -> str | None:
    """Why `ip` must not be fetched from ("a loopback address"), or None if it is public."""
    embedded = _embedded_v4(ip)
    if ip in _METADATA or embedded in _METADATA:
        return "a cloud metadata address"
    flags = ("a loopback", ip.is_loopback), ("an unspecified", ip.is_unspecified)
    flags += ("a link-local", ip.is_link_local), ("a multicast", ip.is_multicast)
    phrase = next((name for name, flag in flags if flag), None)
    phrase = phrase or next((p for p, net in _SPECIAL if ip in net), None)
    if phrase:
        return f"{phrase} address"
    if embedded is not None:  # 6to4, the one embedding as public as its IPv4 address
        inner = address_class(embedded)
        return inner and f"a 6to4 address embedding {inner}"
    if ip.is_private or ip.is_reserved:
        return "a private or reserved address"
    return None if ip.is_global else "a non-public address"


class _Target(NamedTuple):
    url: str
    scheme: str
    host: str
    port: int
    literal: IPAddress | None
    host_header: str
    target: str


def _parse(url: str, where: str) -> _Target:
    def invalid(why: str) -> UrlFetchError:
        return UrlFetchError(f"{where} {why}", "url_invalid")

    if len(url) > MAX_URL_LENGTH:
        raise invalid(f"is {len(url)} characters long; at most {MAX_URL_LENGTH} are accepted")
    if not url.isascii() or any(c <= " " or c == "\x7f" for c in url):
        raise invalid("has spaces, control or non-ASCII characters: percent-encode them")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise invalid("is not a valid URL (check the host, brackets and port)") from None
    scheme, host = parts.scheme.lower(), (parts.hostname or "").rstrip(".")
    if scheme not in ("http", "https"):
        raise invalid(f"has scheme {scheme or 'none'!r}; only http and https can be fetched")
    if "@" in parts.netloc:
        raise invalid("has a user name or password (user:pass@host); send neither")
    if not host or port == 0 or "%" in host:
        raise invalid("has no host, port 0, an IPv6 zone or a %-encoded host")
    literal: IPAddress | None = None
    if ":" in host or _ends_in_number(host):  # urlsplit took off an IPv6 literal's brackets
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            raise invalid("has a numeric host not written a.b.c.d (decimal) or [IPv6]") from None
    elif len(host) > 253 or not _NAME.fullmatch(host):
        raise invalid(f"has an invalid host name {host!r} (international ones: use xn--...)")
    default_port = 443 if scheme == "https" else 80
    host_header = (f"[{host}]" if ":" in host else host) + (
        f":{port}" if port not in (None, default_port) else ""
    )
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return _Target(url, scheme, host, port or default_port, literal, host_header, target)


async def system_resolver(host: str, port: int) -> list[str]:
    """Every address the system's resolver (getaddrinfo, in a thread) returns for `host`."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def _checked_addresses(
    t: _Target, config: FetchConfig, resolver: Resolver, where: str
) -> list[str]:
    """Every address of `t`'s host, each one allowed, or UrlFetchError."""
    ips: list[IPAddress] = [t.literal] if t.literal is not None else []
    if not ips:
        with contextlib.suppress(OSError, ValueError):
            ips = [ipaddress.ip_address(a.split("%")[0]) for a in await resolver(t.host, t.port)]
    if not ips:
        raise UrlFetchError(f"{where}'s host {t.host} could not be resolved", "url_unresolvable")
    on_list = config.policy is UrlPolicy.ALLOWLIST
    allowed = _allowlist(config.allowlist)
    listed = t.host in allowed.names or t.host.endswith(allowed.suffixes)
    for ip in ips:
        reason = address_class(ip)
        in_network = on_list and any(ip in net for net in allowed.networks)
        if reason and (not in_network or reason == "a cloud metadata address"):
            unless = " unless url_fetch_allowlist names its network" if on_list else ""
            raise UrlFetchError(
                f"{where} ({t.host}) resolves to {reason}; only public addresses can be "
                f"fetched{unless}",
                "url_forbidden",
            )
        if on_list and not (in_network or (listed and t.literal is None)):
            raise UrlFetchError(
                f"{where}'s host {t.host} is not on url_fetch_allowlist: ask the operator to "
                "add it (a host name, a .suffix or a network)",
                "url_forbidden",
            )
    return [str(ip) for ip in ips]


class _PinnedBackend(httpcore.AsyncNetworkBackend):
    """Connects to the checked addresses, in order, whatever host httpcore asks for."""

    def __init__(self, addresses: list[str]) -> None:
        self._addresses, self._inner = addresses, httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        error: Exception = httpcore.ConnectError("no address to connect to")
        for address in self._addresses:
            try:
                return await self._inner.connect_tcp(address, port, **kwargs)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        raise error

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


async def _get(
    t: _Target,
    addresses: list[str],
    config: FetchConfig,
    context: ssl.SSLContext | None,
    where: str,
) -> bytes | str:
    """One GET to a checked address: the body, or the URL a redirect points to."""
    pool = httpcore.AsyncConnectionPool(
        ssl_context=context, network_backend=_PinnedBackend(addresses)
    )
    url = httpcore.URL(scheme=t.scheme, host=t.host, port=t.port, target=t.target)
    headers = {"Host": t.host_header, "User-Agent": config.user_agent, "Accept": "image/*"}
    headers["Accept-Encoding"] = "identity"  # the cap counts what the decoder gets: no gzip
    timeouts = dict.fromkeys(("read", "write", "pool"), config.timeout_s)
    timeouts["connect"] = config.connect_timeout_s
    try:
        async with (
            pool,
            pool.stream("GET", url, headers=headers, extensions={"timeout": timeouts}) as response,
        ):
            head = {k.decode().lower(): v.decode("latin-1") for k, v in response.headers}
            if response.status in (301, 302, 303, 307, 308) and "location" in head:
                return urljoin(t.url, head["location"])
            if not 200 <= response.status < 300:
                message = f"{where} answered HTTP {response.status}; link an image anyone can get"
                raise UrlFetchError(message, "url_http_status")
            declared, body, limit = head.get("content-length", ""), bytearray(), config.max_bytes
            if declared.isdigit() and int(declared) > limit:
                raise UrlImageTooLargeError(
                    f"{where} announces {declared} bytes; the limit is {limit}"
                )
            async for chunk in response.aiter_stream():
                body += chunk
                if len(body) > limit:
                    raise UrlImageTooLargeError(f"{where} sent more than the limit, {limit} bytes")
            return bytes(body)
    except httpcore.ConnectTimeout:
        raise UrlFetchError(
            f"{where}'s host {t.host} did not accept a connection within "
            f"{config.connect_timeout_s:g} s",
            "url_unreachable",
        ) from None
    except httpcore.ConnectError as exc:
        message = f"{where}'s host {t.host} could not be reached (refused, or no route)"
        causes = (exc.__cause__, exc.__context__, *exc.args)  # the pool raises `from None`
        if any(isinstance(cause, ssl.SSLError) for cause in causes):
            message = f"{where}'s host {t.host} has no TLS certificate valid for that name"
        raise UrlFetchError(message, "url_unreachable") from None
    except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.TimeoutException):
        message = f"{where}'s host {t.host} broke off or did not speak HTTP"
        raise UrlFetchError(message, "url_unreachable") from None


async def fetch_image(
    url: str,
    config: FetchConfig,
    *,
    resolver: Resolver | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> bytes:
    """The bytes behind `url`, or UrlFetchError (a 4xx) saying why not.

    `resolver` defaults to `system_resolver`; `ssl_context` to httpcore's (certifi's CAs):
    pass one that trusts a private CA for images on an internal host.
    """
    if config.policy is UrlPolicy.OFF:
        raise UrlFetchError(
            "this service does not fetch image URLs: send the image itself, or ask the "
            "operator to set url_fetch (BG_REMOVAL_URL_FETCH) to public or allowlist",
            "url_fetch_disabled",
        )

    async def hops() -> bytes:
        current = url
        for hop in range(config.max_redirects + 1):
            where = f"redirect {hop} of the image URL" if hop else "the image URL"
            t = _parse(current, where)
            addresses = await _checked_addresses(t, config, resolver or system_resolver, where)
            result = await _get(t, addresses, config, ssl_context, where)
            if isinstance(result, bytes):
                return result
            current = result
        message = f"the image URL redirected more than {config.max_redirects} times"
        raise UrlFetchError(f"{message}; link the image itself", "url_too_many_redirects")

    try:
        return await asyncio.wait_for(hops(), config.timeout_s)
    except asyncio.TimeoutError:
        message = f"the image URL took more than {config.timeout_s:g} s to send the whole image"
        raise UrlFetchError(message, "url_timeout") from None
