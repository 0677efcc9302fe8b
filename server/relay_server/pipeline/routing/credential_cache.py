"""Each tenant's routable provider credentials, cached briefly per worker.

``CredentialCache`` holds ciphertext (rows as stored).  Entries live ``ttl_s``
(a disabled or rotated key is out of every worker within that time; this
worker drops it at once through ``invalidate``).  Concurrent misses for one
tenant share one query, and when Postgres fails a stale entry keeps routing
rather than failing requests.  Plaintext is never cached: the router's gate
decrypts a credential for the one call that uses it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from relay_server.errors import ErrorKind, RelayError
from relay_server.storage.postgres.credentials import RoutableCredential

log = logging.getLogger(__name__)

Loader = Callable[[str], Awaitable[list[RoutableCredential]]]


class CredentialCache:
    def __init__(
        self,
        load: Loader,
        *,
        ttl_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        max_tenants: int = 50_000,
    ) -> None:
        self._load = load
        self._ttl = ttl_s
        self._clock = clock
        self._max = max_tenants
        self._entries: dict[str, tuple[float, list[RoutableCredential]]] = {}
        self._inflight: dict[str, asyncio.Future[list[RoutableCredential]]] = {}

    def invalidate(self, tenant_id: str | None = None) -> None:
        """Forget one tenant's entry, or every entry (a pooled key changed)."""
        if tenant_id is None:
            self._entries.clear()
        else:
            self._entries.pop(tenant_id, None)

    async def for_tenant(self, tenant_id: str) -> list[RoutableCredential]:
        cached = self._entries.get(tenant_id)
        if cached is not None and cached[0] > self._clock():
            return cached[1]
        pending = self._inflight.get(tenant_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[list[RoutableCredential]] = asyncio.get_running_loop().create_future()
        self._inflight[tenant_id] = future
        try:
            rows = await self._load(tenant_id)
        except Exception as exc:  # noqa: BLE001
            if cached is not None:
                log.warning("reloading provider credentials failed; using the previous copy", exc_info=True)
                rows = cached[1]
            else:
                err = RelayError(ErrorKind.NO_PROVIDER_AVAILABLE, "Provider credentials are temporarily unavailable.")
                future.set_exception(err)
                future.exception()  # retrieved: waiters re-raise it, nobody logs it as unhandled
                raise err from exc
        except BaseException as exc:
            future.set_exception(RelayError(ErrorKind.NO_PROVIDER_AVAILABLE, "Provider credentials are temporarily unavailable."))
            future.exception()
            raise exc
        finally:
            self._inflight.pop(tenant_id, None)
        if len(self._entries) >= self._max:
            self._entries.clear()
        self._entries[tenant_id] = (self._clock() + self._ttl, rows)
        future.set_result(rows)
        return rows
