"""A resolver that enforces ``relay_server.address_policy`` when aiohttp connects.

Used by the webhook sender and by the aiohttp upstream client for tenant-chosen
(BYOK) base URLs.

Names are judged when a delivery connects, never when the URL is saved: DNS
can be re-pointed at any time (rebinding), so ``GuardedResolver`` filters
every address a name resolves to and aiohttp connects only to what is left.
aiohttp never asks its resolver about IP-literal hosts (``TCPConnector.
_resolve_host`` returns them as they are), so ``check_host`` judges those
before the request is made.
"""

from __future__ import annotations

import logging
import socket

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.client_exceptions import ClientConnectorError
from aiohttp.resolver import DefaultResolver

from relay_server.address_policy import (  # noqa: F401 (the policy, re-exported for the webhook code)
    ALLOW_PRIVATE_ENV,
    IPAddress,
    Refused,
    RefusedDestination,
    allowed_addresses,
    check_host,
    classify,
    embedded_ipv4,
    looks_like_ip,
    parse_literal,
    refused_message,
)

log = logging.getLogger(__name__)


class GuardedResolver(AbstractResolver):
    """Resolves through ``inner`` and keeps only the addresses the rules allow.

    Build it inside a running event loop (the default inner resolver needs one).
    The connector that uses it does not close it: its owner calls ``close``.
    """

    def __init__(self, *, allow_private: bool, inner: AbstractResolver | None = None) -> None:
        self._allow_private = allow_private
        self._inner = inner if inner is not None else DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        allowed, refused = allowed_addresses([r["host"] for r in results], allow_private=self._allow_private)
        if refused:
            # The operator may see the addresses; the delivery row (tenant-visible) only the kinds.
            log.info("destination addresses refused", extra={"host": host, "refused": sorted(refused)})
        if allowed or not refused:
            return [r for r in results if r["host"] in allowed]
        raise RefusedDestination(refused_message(host, refused))

    async def close(self) -> None:
        await self._inner.close()


def refusal_of(exc: BaseException) -> str | None:
    """The refusal text when ``exc`` is (or wraps) a ``RefusedDestination``."""
    if isinstance(exc, RefusedDestination):
        return str(exc)
    if isinstance(exc, ClientConnectorError) and isinstance(exc.os_error, RefusedDestination):
        return str(exc.os_error)
    return None
