"""The upstream HTTP client every provider shares, chosen by setting.

``RELAY_UPSTREAM_HTTP=native`` (default) is Relay's own client
(``http_client``), measured fastest on the hot path; ``aiohttp`` is the
library-backed one (``http_aiohttp``).  Both implement ``UpstreamHttp`` and
pass one conformance suite; both route through the egress proxy configured by
``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``NO_PROXY`` (``http_proxy``).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from relay_server.providers.http_client import HttpClient, Timeouts, UpstreamResponse
from relay_server.providers.http_proxy import ProxyRoutes
from relay_server.providers.sse import SSEEvent
from relay_server.providers.translator import UpstreamRequest
from relay_server.settings import Settings

IMPLEMENTATIONS = ("native", "aiohttp")


class UpstreamStreamLike(Protocol):
    status: int
    headers: Mapping[str, str]

    async def read_body(self) -> bytes: ...
    async def next_events(self) -> list[SSEEvent] | None: ...
    async def drain(self) -> None: ...


class UpstreamHttp(Protocol):
    async def send(self, req: UpstreamRequest, timeouts: Timeouts, total_s: float) -> UpstreamResponse: ...
    def open_stream(
        self, req: UpstreamRequest, timeouts: Timeouts, total_s: float
    ) -> AbstractAsyncContextManager[UpstreamStreamLike]: ...
    async def close(self) -> None: ...


def build_upstream_http(settings: Settings, **options: object) -> UpstreamHttp:
    """The configured client (call inside the running loop).  ``options`` go to
    ``create`` (limits, an SSL context); raises ``ValueError`` for an unknown
    implementation or a malformed proxy URL (the message names the variable only)."""
    routes = ProxyRoutes.from_settings(settings)
    if settings.upstream_http == "native":
        return HttpClient.create(proxies=routes, **options)  # type: ignore[arg-type]
    if settings.upstream_http == "aiohttp":
        from relay_server.providers.http_aiohttp import AiohttpClient  # noqa: PLC0415 (only when chosen)

        return AiohttpClient.create(proxies=routes, **options)  # type: ignore[arg-type]
    raise ValueError(f"RELAY_UPSTREAM_HTTP must be one of {', '.join(IMPLEMENTATIONS)}")
