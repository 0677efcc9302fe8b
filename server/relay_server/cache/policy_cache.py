"""The one in-process cache for tenant policy: keys, quotas, caps, markup,
tenant configuration, provider credentials.

Every worker keeps what the request path reads about a tenant in memory, and
every admin change reaches it through the invalidation bus
(``tenancy/policy_bus.py``) before the admin call returns.  A TTL is only the
safety net for a lost message and the bound on how stale a value may be.

* **Tags.**  Each entry carries the ``(scope, id)`` pairs of the changes that
  make it wrong — an API key's record is tagged with its key and its tenant,
  a tenant's configuration with its tenant and ``config``.  ``invalidate``
  drops the entries carrying a tag (an empty id: every entry of the scope).
* **Single flight.**  Concurrent misses for one key share one load.
* **Invalidation wins.**  An invalidation detaches the loads in flight: their
  callers get their answer, but it is not kept, and a request that starts
  after the invalidation starts a new load.  So an admin change is seen by
  the very next request, never hidden behind a load that read the old state.
* **Stale on error.**  When the reload of an *expired* entry fails (Postgres
  down), the previous value is served and counted, for at most
  ``max_stale_s`` past its expiry; an entry that was invalidated is gone and
  never served stale.  A first load that fails raises: the caller decides
  whether that fails open or closed.
* **Refresh ahead** (optional): an expired entry is served at once while one
  background task reloads it, so no request waits on Postgres for a policy
  already known (rate limits, markup).

Leaf module: standard library only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

Tag = tuple[str, str]
"""(scope, id): scope is one of ``SCOPES``; an id of ``""`` means the whole scope."""

SCOPES = frozenset({"key", "tenant", "plan", "credentials", "config"})


class PolicyCache(Generic[K, V]):
    def __init__(
        self,
        name: str,
        *,
        ttl_s: float,
        tags: Callable[[K, V], Iterable[Tag]],
        max_stale_s: float = 300.0,
        refresh_ahead: bool = False,
        ttl_of: Callable[[V], float] | None = None,
        on_stale: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = 100_000,
    ) -> None:
        self.name = name
        self._ttl = ttl_s
        self._tags = tags
        self._max_stale = max_stale_s
        self._refresh_ahead = refresh_ahead
        self._ttl_of = ttl_of
        self._on_stale = on_stale
        self._clock = clock
        self._max = max_entries
        # key → (expires, value, tags, serve-stale-until)
        self._entries: dict[K, tuple[float, V, tuple[Tag, ...], float]] = {}
        # tag → keys carrying it: an invalidation touches only its entries, never scans them all
        # (a scan of 100k API keys held the event loop ~120 ms on every worker).
        self._index: dict[Tag, set[K]] = {}
        self._loading: dict[K, asyncio.Future[V]] = {}
        self._epoch = 0  # bumped by every invalidation: older loads may not store
        self.stale_served = 0

    # --- reading ----------------------------------------------------------------------

    async def get(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        entry = self._entries.get(key)
        if entry is not None:
            if entry[0] > self._clock():
                return entry[1]
            if self._refresh_ahead and entry[3] > self._clock():
                if key not in self._loading:
                    self._start(key, load)
                return entry[1]
        pending = self._loading.get(key)
        if pending is None:
            pending = self._start(key, load)
        return await asyncio.shield(pending)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def expires_in(self, key: K) -> float | None:
        """Seconds until the entry needs a reload (None when absent)."""
        entry = self._entries.get(key)
        return entry[0] - self._clock() if entry is not None else None

    def _start(self, key: K, load: Callable[[], Awaitable[V]]) -> asyncio.Future[V]:
        task = asyncio.ensure_future(self._load(key, load, self._epoch))
        self._loading[key] = task

        def done(t: asyncio.Future[V]) -> None:
            if self._loading.get(key) is t:
                del self._loading[key]
            if not t.cancelled():
                t.exception()  # retrieved: waiters re-raise it; a background refresh logged it

        task.add_done_callback(done)
        return task

    async def _load(self, key: K, load: Callable[[], Awaitable[V]], epoch: int) -> V:
        try:
            value = await load()
        except Exception as exc:
            entry = self._entries.get(key)
            now = self._clock()
            if entry is None or entry[3] <= now:
                raise
            # Postgres (or whatever the loader reads) failed: the last known
            # value beats failing requests, within the staleness bound.  It is
            # kept for another TTL (not past the bound), so an outage costs one
            # failed reload per TTL, not one per request.
            self.stale_served += 1
            if self._on_stale is not None:
                self._on_stale(self.name)
            log.warning("policy reload failed; serving the previous value", extra={"cache": self.name, "error": repr(exc)})
            self._entries[key] = (min(now + self._ttl, entry[3]), entry[1], entry[2], entry[3])
            return entry[1]
        if epoch == self._epoch:
            if len(self._entries) >= self._max and key not in self._entries:
                self._entries.clear()
                self._index.clear()
            ttl = self._ttl if self._ttl_of is None else min(self._ttl, self._ttl_of(value))
            expires = self._clock() + ttl
            self._remove(key)
            tags = tuple(self._tags(key, value))
            self._entries[key] = (expires, value, tags, expires + self._max_stale)
            for tag in tags:
                self._index.setdefault(tag, set()).add(key)
        return value

    def _remove(self, key: K) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        for tag in entry[2]:
            keys = self._index.get(tag)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._index[tag]

    # --- invalidation -----------------------------------------------------------------

    def invalidate(self, scope: str, ident: str = "") -> int:
        """Drop every entry tagged ``(scope, ident)`` (``ident=""``: the whole scope); returns how many."""
        self._detach()
        if ident:
            doomed = set(self._index.get((scope, ident), ()))
        else:
            doomed = {key for tag, keys in self._index.items() if tag[0] == scope for key in keys}
        if len(doomed) == len(self._entries):  # e.g. a pooled credential or a plan: everything goes
            self._entries.clear()
            self._index.clear()
        else:
            for key in doomed:
                self._remove(key)
        return len(doomed)

    def forget(self, key: K) -> None:
        """Drop one entry by its own key."""
        self._detach()
        self._remove(key)

    def clear(self) -> None:
        """Drop everything (e.g. invalidation messages may have been missed)."""
        self._detach()
        self._entries.clear()
        self._index.clear()

    def _detach(self) -> None:
        # A load in flight may have read the state this invalidation is about:
        # it must not store, and later requests must not join it.
        self._epoch += 1
        self._loading.clear()
