"""The egress proxy: which upstreams go through it, and the CONNECT tunnel.

Enterprises route outbound traffic through an HTTP proxy.  ``ProxyRoutes`` is
built once from settings (``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``NO_PROXY``) and
asked once per upstream URL (the client caches the answer with the parsed URL,
so a request with no proxy configured does no extra work):

* https upstreams: an HTTP ``CONNECT host:port`` tunnel through the proxy,
  then TLS to the upstream inside it (the proxy sees only the host name);
* http upstreams: the request goes to the proxy in absolute form
  (``POST http://host:port/path HTTP/1.1``);
* ``Proxy-Authorization: Basic`` from the proxy URL's userinfo, both ways.

``NO_PROXY`` is a comma-separated list: ``*`` (no proxy at all), host names
(``example.com`` also covers its subdomains; ``.example.com`` only them),
IP addresses and CIDR ranges, each optionally with ``:port``.

The proxy URL must be ``http://`` (TLS to the proxy itself is not supported);
its credentials never appear in a repr, a log line or an error message.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

# The proxy's answer to CONNECT is a short head; anything longer is not a proxy.
_MAX_CONNECT_HEAD = 16 * 1024


class ProxyError(OSError):
    """The proxy hung up or spoke nonsense during CONNECT (an ``OSError``, as a
    failed dial is).  The text names no credential."""


class ProxyRefused(ProxyError):
    """The proxy answered CONNECT with something other than 2xx (407: bad or
    missing credentials).  The text carries the status line only."""


@dataclass(frozen=True, slots=True)
class Proxy:
    host: str
    port: int
    authorization: str = field(default="", repr=False)
    """``Basic …`` from the URL's userinfo, or empty."""

    @property
    def url(self) -> str:
        """The proxy's address without credentials (for libraries and logs)."""
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{shown}:{self.port}"


def parse_proxy(url: str, variable: str) -> Proxy | None:
    """``http://user:pass@host:port`` (scheme optional); raises ``ValueError``
    naming the variable, never the value."""
    url = url.strip()
    if not url:
        return None
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme.lower() != "http":
        raise ValueError(f"{variable} must be an http:// proxy URL (TLS to the proxy is not supported)")
    try:
        port = parts.port or 80
    except ValueError:
        raise ValueError(f"{variable} has an invalid port") from None
    if not parts.hostname:
        raise ValueError(f"{variable} has no host")
    authorization = ""
    if parts.username is not None:
        userinfo = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(userinfo.encode("utf-8")).decode("ascii")
    return Proxy(parts.hostname, port, authorization)


@dataclass(frozen=True, slots=True)
class _Exemption:
    host: str = ""
    """A name (lower case, no leading dot) or empty for a network."""
    subdomains_only: bool = False
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    port: int | None = None

    def matches(self, host: str, ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.network is not None or ip is not None:  # addresses match networks, names match names
            return ip is not None and self.network is not None and ip in self.network
        if host == self.host:
            return not self.subdomains_only
        return host.endswith("." + self.host)


def _exemption(entry: str) -> _Exemption | None:
    entry = entry.strip().lower()
    if not entry:
        return None
    port: int | None = None
    if entry.startswith("["):  # [v6]:port
        host, _, rest = entry[1:].partition("]")
        if rest.startswith(":") and rest[1:].isdigit():
            port = int(rest[1:])
        entry = host
    elif entry.count(":") == 1:
        name, _, raw_port = entry.partition(":")
        if raw_port.isdigit():
            entry, port = name, int(raw_port)
    try:
        return _Exemption(network=ipaddress.ip_network(entry, strict=False), port=port)
    except ValueError:
        pass
    subdomains_only = entry.startswith(".")
    name = entry.lstrip(".").lstrip("*").lstrip(".")
    return _Exemption(host=name, subdomains_only=subdomains_only, port=port) if name else None


class ProxyRoutes:
    """Which proxy (if any) an upstream is reached through."""

    __slots__ = ("_https", "_http", "_bypass_all", "_exemptions")

    def __init__(self, *, https: Proxy | None = None, http: Proxy | None = None, no_proxy: str = "") -> None:
        self._https = https
        self._http = http
        entries = [e.strip() for e in no_proxy.split(",")]
        self._bypass_all = "*" in entries
        self._exemptions = [x for x in map(_exemption, entries) if x is not None and x.host != "*"]

    @classmethod
    def from_settings(cls, settings: Any) -> ProxyRoutes:
        return cls(
            https=parse_proxy(settings.https_proxy, "HTTPS_PROXY"),
            http=parse_proxy(settings.http_proxy, "HTTP_PROXY"),
            no_proxy=settings.no_proxy,
        )

    @property
    def configured(self) -> bool:
        return (self._https is not None or self._http is not None) and not self._bypass_all

    def for_upstream(self, scheme: str, host: str, port: int) -> Proxy | None:
        proxy = self._https if scheme == "https" else self._http
        if proxy is None or self._bypass_all:
            return None
        host = host.lower().rstrip(".")
        try:
            ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
        except ValueError:
            ip = None
        if any(x.matches(host, ip, port) for x in self._exemptions):
            return None
        return proxy


def connect_head(proxy: Proxy, host: str, port: int) -> bytes:
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines = [f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n"]
    if proxy.authorization:
        lines.append(f"Proxy-Authorization: {proxy.authorization}\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("latin-1")


async def open_tunnel(loop: asyncio.AbstractEventLoop, proxy: Proxy, host: str, port: int) -> socket.socket:
    """A connected socket to the proxy on which ``CONNECT host:port`` succeeded.

    Raises ``OSError`` (proxy unreachable), ``ProxyRefused`` (non-2xx answer) or
    ``ProxyError`` (the proxy hung up or spoke nonsense)."""
    sock = await _connect_socket(loop, proxy.host, proxy.port)
    try:
        await loop.sock_sendall(sock, connect_head(proxy, host, port))
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = await loop.sock_recv(sock, 4096)
            if not chunk:
                raise ProxyError("the proxy closed the connection during CONNECT")
            head += chunk
            if len(head) > _MAX_CONNECT_HEAD:
                raise ProxyError("the proxy's answer to CONNECT is too long")
        status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise ProxyError("the proxy's answer to CONNECT is malformed")
        if not 200 <= int(parts[1]) < 300:
            raise ProxyRefused(f"the proxy refused the tunnel: {parts[1]} {parts[2] if len(parts) > 2 else ''}".rstrip())
        if not head.endswith(b"\r\n\r\n"):
            raise ProxyError("the proxy sent bytes after its answer to CONNECT")
    except BaseException:
        sock.close()
        raise
    return sock


async def _connect_socket(loop: asyncio.AbstractEventLoop, host: str, port: int) -> socket.socket:
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    error: OSError | None = None
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        except BaseException:
            sock.close()
            raise
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    raise error or OSError(f"the proxy host {host!r} has no address")


async def dial(
    loop: asyncio.AbstractEventLoop,
    factory: Callable[[], asyncio.Protocol],
    proxy: Proxy,
    host: str,
    port: int,
    tls: Any,
) -> tuple[asyncio.Transport, Any]:
    """Open a connection to ``host:port`` through ``proxy``: a CONNECT tunnel
    with TLS inside for https (``tls`` is its context), or a plain connection
    to the proxy itself for http (requests then go in absolute form)."""
    if tls is None:
        return await loop.create_connection(factory, proxy.host, proxy.port)
    sock = await open_tunnel(loop, proxy, host, port)
    try:
        return await loop.create_connection(factory, sock=sock, ssl=tls, server_hostname=host)
    except BaseException:
        sock.close()
        raise
