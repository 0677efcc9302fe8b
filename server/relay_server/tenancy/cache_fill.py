"""Read-through Redis entries that a concurrent invalidation cannot be undone by.

The race: a reader misses, reads Postgres *before* a change commits, and
writes its (old) answer to Redis *after* the change's invalidation ran — the
stale entry would then live for its whole TTL.  So invalidation writes a
unique tombstone instead of deleting, and a reader may only fill

* an empty key (``SET NX``): no invalidation can have run since it looked, or
  the key would hold a tombstone;
* the very tombstone it saw before reading Postgres (compare-and-set): that
  invalidation happened before its read, so its read is fresh.  A newer
  tombstone (a change during its read) makes the fill a no-op.
"""

from __future__ import annotations

import secrets

from redis.asyncio import Redis

TOMBSTONE_PREFIX = b"\x00purged:"
TOMBSTONE_TTL_S = 60

_COMPARE_AND_SET = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
end
return false
"""


def is_tombstone(raw: bytes | None) -> bool:
    return raw is not None and raw.startswith(TOMBSTONE_PREFIX)


def new_tombstone() -> bytes:
    return TOMBSTONE_PREFIX + secrets.token_hex(8).encode()


async def fill(redis: Redis, key: str, seen: bytes | None, value: bytes, ttl_s: int) -> None:
    """Store ``value`` unless an invalidation ran after the reader looked (``seen``)."""
    if seen is None:
        await redis.set(key, value, ex=ttl_s, nx=True)
    elif is_tombstone(seen):
        await redis.eval(_COMPARE_AND_SET, 1, key, seen, value, ttl_s)
    # Anything else: the reader saw a live entry it could not use; leave it alone.
