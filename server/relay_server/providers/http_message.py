"""HTTP/1.1 message formats for the upstream client: URL targets, the request
head, and the response header mapping.

Kept apart from the connection so the bytes Relay puts on the wire can be read
(and tested) in one place.  Nothing here logs: headers carry credentials.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

if TYPE_CHECKING:
    from relay_server.providers.http_proxy import Proxy, ProxyRoutes

PoolKey = tuple[str, str, int, "Proxy | None"]
"""``(scheme, host, port, proxy)``: connections are shared per key, so a
connection through the egress proxy never serves a direct request (or the
other way round)."""

_DEFAULT_PORTS = {"http": 80, "https": 443}
# Characters left as they are in a request target (RFC 3986 pchar plus "/" and
# "?" in the query; "%" so an already-encoded URL is not encoded twice).
_PATH_SAFE = "/%:@!$&'()*+,;=~"
_QUERY_SAFE = _PATH_SAFE + "?"
# Framing is ours: a caller's value for these would contradict the bytes we send.
_OWN_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "accept-encoding"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


@dataclass(frozen=True, slots=True)
class Target:
    """Where one URL points, parsed once and cached by the client."""

    key: PoolKey
    host_header: str
    path: str
    """Path and query as sent on the request line."""
    log_path: str
    """Path without the query (a query may carry a key): the only part logged."""
    proxy_head: str = ""
    """``Proxy-Authorization`` line for http requests sent to a proxy, or empty."""

    @property
    def tls(self) -> bool:
        return self.key[0] == "https"


def parse_target(url: str, routes: ProxyRoutes | None = None) -> Target:
    """Raises ``ValueError`` (message without the URL) for what we cannot send.

    With ``routes``, the target records the proxy it is reached through; an
    http one through a proxy is requested in absolute form."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(f"unsupported URL scheme {scheme!r}")
    host = parts.hostname  # lower-cased, IPv6 brackets removed
    if not host:
        raise ValueError("the URL has no host")
    port = parts.port or _DEFAULT_PORTS[scheme]  # .port raises ValueError when out of range
    shown = f"[{host}]" if ":" in host else host
    host_header = shown if port == _DEFAULT_PORTS[scheme] else f"{shown}:{port}"
    path = quote(parts.path or "/", safe=_PATH_SAFE)
    full = f"{path}?{quote(parts.query, safe=_QUERY_SAFE)}" if parts.query else path
    proxy = routes.for_upstream(scheme, host, port) if routes is not None else None
    proxy_head = ""
    if proxy is not None and scheme == "http":
        full = f"http://{host_header}{full}"
        if proxy.authorization:
            proxy_head = f"Proxy-Authorization: {proxy.authorization}\r\n"
    return Target((scheme, host, port, proxy), host_header, full, path, proxy_head)


def encode_request(method: str, target: Target, headers: Mapping[str, str], body: bytes | None) -> bytes:
    """The whole request (head and body) as one bytes object, ready for one write.

    Adds ``Host``, ``Content-Length``, ``Content-Type: application/json`` (when
    there is a body and the caller gave none), ``User-Agent: relay-gateway``
    (unless given) and ``Accept-Encoding: identity`` (Relay never decompresses).
    Raises ``ValueError`` if a header would break the framing (CR/LF inside a
    name or value); the message never contains the value.
    """
    if method == "HEAD":
        # A HEAD response has framing headers but no body; nothing in Relay sends one.
        raise ValueError("HEAD requests are not supported")
    lines = [f"{method} {target.path} HTTP/1.1\r\nHost: {target.host_header}\r\n{target.proxy_head}"]
    expected_newlines = 3 if target.proxy_head else 2
    user_agent = content_type = True
    for name, value in headers.items():
        lower = name.lower()
        if lower in _OWN_HEADERS:
            continue
        if lower == "user-agent":
            user_agent = False
        elif lower == "content-type":
            content_type = False
        lines.append(f"{name}: {value}\r\n")
        expected_newlines += 1
    if user_agent:
        lines.append("User-Agent: relay-gateway\r\n")
        expected_newlines += 1
    if body is not None:
        if content_type:
            lines.append("Content-Type: application/json\r\n")
            expected_newlines += 1
        lines.append(f"Content-Length: {len(body)}\r\nAccept-Encoding: identity\r\n\r\n")
        expected_newlines += 3
    elif method in _BODY_METHODS:
        lines.append("Content-Length: 0\r\nAccept-Encoding: identity\r\n\r\n")
        expected_newlines += 3
    else:
        lines.append("Accept-Encoding: identity\r\n\r\n")
        expected_newlines += 2
    head = "".join(lines)
    # One scan each instead of a check per header: any CR or LF smuggled in a
    # name or value shows up as a surplus.
    if head.count("\n") != expected_newlines or head.count("\r") != expected_newlines:
        raise ValueError("a request header name or value contains CR or LF")
    encoded = head.encode("utf-8")
    return encoded + body if body else encoded


class ResponseHeaders(Mapping[str, str]):
    """Response headers, case-insensitive, built on first access.

    Most successful responses never have their headers read, so the raw
    ``(name, value)`` pairs from the parser are decoded only when asked.
    Repeated headers are joined with ``", "``.  ``repr`` shows names only.
    """

    __slots__ = ("_raw", "_map")

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self._raw = raw
        self._map: dict[str, str] | None = None

    def _decoded(self) -> dict[str, str]:
        if self._map is None:
            decoded: dict[str, str] = {}
            for raw_name, raw_value in self._raw:
                name = raw_name.decode("latin-1").lower()
                value = raw_value.decode("utf-8", "surrogateescape")
                previous = decoded.get(name)
                decoded[name] = value if previous is None else f"{previous}, {value}"
            self._map = decoded
        return self._map

    def __getitem__(self, name: str) -> str:
        return self._decoded()[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._decoded()

    def __iter__(self) -> Iterator[str]:
        return iter(self._decoded())

    def __len__(self) -> int:
        return len(self._decoded())

    def __repr__(self) -> str:
        return f"ResponseHeaders({sorted(self._decoded())})"
