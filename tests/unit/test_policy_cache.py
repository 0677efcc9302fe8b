"""The one tenant-policy cache: single flight, tags, invalidation of loads in
flight, and bounded stale-on-error."""

from __future__ import annotations

import asyncio

import pytest

from relay_server.cache.policy_cache import PolicyCache


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _cache(clock: _Clock | None = None, **kw) -> PolicyCache[str, int]:
    return PolicyCache("t", ttl_s=5.0, tags=lambda key, _v: [("tenant", key.split(":")[0]), ("key", key)],
                       clock=clock or _Clock(), **kw)  # fmt: skip


@pytest.mark.asyncio
async def test_concurrent_misses_share_one_load() -> None:
    calls = 0
    gate = asyncio.Event()

    async def load() -> int:
        nonlocal calls
        calls += 1
        await gate.wait()
        return 7

    cache = _cache()
    waiters = [asyncio.ensure_future(cache.get("t1:a", load)) for _ in range(20)]
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*waiters) == [7] * 20
    assert calls == 1
    assert await cache.get("t1:a", load) == 7 and calls == 1


@pytest.mark.asyncio
async def test_invalidation_by_tag_drops_only_the_tagged_entries() -> None:
    cache = _cache()
    for key in ("t1:a", "t1:b", "t2:a"):
        await cache.get(key, lambda: asyncio.sleep(0, 1))
    assert cache.invalidate("tenant", "t1") == 2
    assert "t2:a" in cache and "t1:a" not in cache and "t1:b" not in cache
    assert cache.invalidate("key", "t2:a") == 1 and len(cache) == 0
    for key in ("t1:a", "t2:a"):
        await cache.get(key, lambda: asyncio.sleep(0, 1))
    assert cache.invalidate("tenant") == 2  # no id: the whole scope
    assert cache.invalidate("credentials", "t1") == 0


@pytest.mark.asyncio
async def test_a_load_in_flight_during_an_invalidation_is_not_kept_nor_joined() -> None:
    values = iter([1, 2])
    gates = [asyncio.Event(), asyncio.Event()]

    async def load() -> int:
        value = next(values)
        await gates[value - 1].wait()
        return value

    cache = _cache()
    old = asyncio.ensure_future(cache.get("t1:a", load))
    await asyncio.sleep(0)
    cache.invalidate("tenant", "t1")  # the change commits while the old state is being read
    new = asyncio.ensure_future(cache.get("t1:a", load))  # a request after the change: a new load
    await asyncio.sleep(0)
    gates[0].set()
    assert await old == 1  # its caller gets its answer ...
    assert "t1:a" not in cache  # ... which is not kept
    gates[1].set()
    assert await new == 2
    assert await cache.get("t1:a", load) == 2


@pytest.mark.asyncio
async def test_a_failed_reload_serves_the_previous_value_within_the_bound_and_counts_it() -> None:
    clock = _Clock()
    stale: list[str] = []
    cache = _cache(clock, max_stale_s=60.0, on_stale=stale.append)

    async def bad() -> int:
        raise ConnectionError("postgres is down")

    assert await cache.get("t1:a", lambda: asyncio.sleep(0, 1)) == 1
    clock.now = 10.0  # expired
    assert await cache.get("t1:a", bad) == 1
    assert cache.stale_served == 1 and stale == ["t"]
    assert await cache.get("t1:a", bad) == 1 and cache.stale_served == 1  # kept for another TTL: no reload per request
    clock.now = 66.0  # past expiry + max_stale
    with pytest.raises(ConnectionError):
        await cache.get("t1:a", bad)


@pytest.mark.asyncio
async def test_an_invalidated_entry_is_never_served_stale() -> None:
    cache = _cache(max_stale_s=3600.0)

    async def bad() -> int:
        raise ConnectionError("postgres is down")

    await cache.get("t1:a", lambda: asyncio.sleep(0, 1))
    cache.invalidate("key", "t1:a")
    with pytest.raises(ConnectionError):  # the caller decides: fail open or closed
        await cache.get("t1:a", bad)
    assert await cache.get("t1:a", lambda: asyncio.sleep(0, 3)) == 3  # a first-load failure is not remembered


@pytest.mark.asyncio
async def test_refresh_ahead_serves_the_expired_value_while_one_reload_runs() -> None:
    clock = _Clock()
    cache = _cache(clock, refresh_ahead=True)
    calls = 0
    gate = asyncio.Event()

    async def load() -> int:
        nonlocal calls
        calls += 1
        if calls > 1:
            await gate.wait()
        return calls

    assert await cache.get("t1:a", load) == 1
    clock.now = 10.0
    assert [await cache.get("t1:a", load) for _ in range(5)] == [1] * 5  # no request waits
    gate.set()
    for _ in range(3):
        await asyncio.sleep(0)
    assert await cache.get("t1:a", load) == 2 and calls == 2


@pytest.mark.asyncio
async def test_ttl_of_shortens_an_entry_and_clear_forgets_everything() -> None:
    clock = _Clock()
    cache = PolicyCache("t", ttl_s=60.0, tags=lambda k, v: [], ttl_of=lambda v: v, clock=clock)
    await cache.get("a", lambda: asyncio.sleep(0, 3))
    assert cache.expires_in("a") == 3
    cache.clear()
    assert len(cache) == 0 and cache.expires_in("a") is None


@pytest.mark.asyncio
async def test_the_tag_index_follows_reloads_forgets_and_clears() -> None:
    owner = {"k": "t1"}
    cache = PolicyCache("t", ttl_s=5.0, tags=lambda key, _v: [("tenant", owner[key])], clock=_Clock())
    await cache.get("k", lambda: asyncio.sleep(0, 1))
    cache.forget("k")
    assert cache.invalidate("tenant", "t1") == 0
    owner["k"] = "t2"  # reloaded with other tags: the old ones no longer reach it
    await cache.get("k", lambda: asyncio.sleep(0, 2))
    assert cache.invalidate("tenant", "t1") == 0 and "k" in cache
    assert cache.invalidate("tenant", "t2") == 1 and "k" not in cache
    await cache.get("k", lambda: asyncio.sleep(0, 3))
    cache.clear()
    assert cache.invalidate("tenant") == 0
