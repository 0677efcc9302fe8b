"""Each tenant's routable provider credentials, cached per worker.

``CredentialCache`` holds ciphertext (rows as stored) in a ``PolicyCache``
tagged ``credentials``: a created, rotated or disabled key is dropped on
every worker by the invalidation bus before the admin call returns (a pooled
key drops every tenant's entry); ``ttl_s`` only bounds a lost message.
Concurrent misses for one tenant share one query, and when Postgres fails a
stale entry keeps routing rather than failing requests.  Plaintext is never
cached: the router's gate decrypts a credential for the one call that uses it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from relay_server.cache.policy_cache import PolicyCache
from relay_server.errors import ErrorKind, RelayError
from relay_server.storage.postgres.credentials import RoutableCredential

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
        self.cache: PolicyCache[str, list[RoutableCredential]] = PolicyCache(
            "credentials", ttl_s=ttl_s, tags=lambda tenant_id, _v: [("credentials", tenant_id)],
            clock=clock, max_entries=max_tenants,
        )  # fmt: skip

    def invalidate(self, tenant_id: str | None = None) -> None:
        """Forget one tenant's entry, or every entry (a pooled key changed)."""
        self.cache.invalidate("credentials", tenant_id or "")

    async def for_tenant(self, tenant_id: str) -> list[RoutableCredential]:
        try:
            return await self.cache.get(tenant_id, lambda: self._load(tenant_id))
        except RelayError:
            raise
        except Exception as exc:  # noqa: BLE001 (never loaded, and Postgres failed)
            raise RelayError(ErrorKind.NO_PROVIDER_AVAILABLE, "Provider credentials are temporarily unavailable.") from exc
