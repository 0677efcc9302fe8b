"""Outbound limits: how much of each provider key's RPM/TPM the last 60 s used.

Keys ``rl:out:{provider}:{credential}:rpm|tpm|cool``; the braces make the
provider a Redis Cluster hash tag, so one script can read all keys of a
provider.  Windows are sliding minutes (hash epoch-second -> count).

* ``usage`` (read-only) orders a provider's keys by remaining capacity;
* ``acquire`` atomically checks and takes one request + estimated tokens;
* ``settle`` corrects the estimate with the real count and, after a provider
  429, cools the key down so nobody sends to it until the provider's
  ``retry-after`` (or a default) has passed.

Redis errors propagate: the caller decides to fail open (outbound limits
protect Relay's keys, they never refuse a tenant's request by themselves).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from relay_server.storage.redis.wire import Script, Wire


def _script(name: str) -> str:
    return resources.files("relay_server.storage.redis").joinpath("scripts", name).read_text(encoding="utf-8")


def window_keys(provider_id: str, credential_id: str) -> tuple[str, str, str]:
    base = f"rl:out:{{{provider_id}}}:{credential_id}"
    return f"{base}:rpm", f"{base}:tpm", f"{base}:cool"


@dataclass(frozen=True, slots=True)
class KeyUsage:
    requests: int
    tokens: int
    cooling_ms: int


@dataclass(frozen=True, slots=True)
class Taken:
    second: int
    tokens: int


def _parse_usage(groups: Mapping[str, Sequence[str]], replies: Sequence[Any]) -> dict[str, dict[str, KeyUsage]]:
    result: dict[str, dict[str, KeyUsage]] = {}
    for (pid, ids), flat in zip(groups.items(), replies, strict=True):
        values = [int(v) for v in flat]
        result[pid] = {cid: KeyUsage(*values[3 * i : 3 * i + 3]) for i, cid in enumerate(ids)}
    return result


# acquire's refusal reasons
REFUSED_RPM, REFUSED_TPM, REFUSED_COOLING = 1, 2, 3


class OutboundWindows:
    """``wire``: the worker's per-request connection (``RedisWire``); when given, ``acquire`` and
    ``settle`` — one script call each per dispatched request — run over it, at a fraction of the
    general client's CPU per call (and on the connection admission's calls already keep warm)."""

    def __init__(self, redis: Redis, *, wire: Wire | None = None, clock: Callable[[], float] = time.time) -> None:
        self._redis = redis
        self._wire = wire
        self._clock = clock
        acquire, settle = _script("outbound_acquire.lua"), _script("outbound_settle.lua")
        self._usage = redis.register_script(_script("outbound_usage.lua"))
        self._acquire = redis.register_script(acquire)
        self._settle = redis.register_script(settle)
        self._acquire_wire = Script.of(acquire)
        self._settle_wire = Script.of(settle)

    def _now(self) -> int:
        return int(self._clock())

    @property
    def client(self) -> Redis:
        return self._redis

    def usage_reads(
        self, groups: Mapping[str, Sequence[str]]
    ) -> tuple[list[list[Any]], Callable[[Sequence[Any]], dict[str, dict[str, KeyUsage]]]]:
        """``usage`` as commands sent with other plan-time reads (one round trip), and their parser.

        Raw EVALSHA: the parser re-raises an error reply (``NOSCRIPT`` after a Redis
        restart), and the caller then falls back to ``usage``, which loads the script.
        """
        groups = {pid: list(ids) for pid, ids in groups.items() if ids}
        now = self._now()
        commands: list[list[Any]] = []
        for pid, ids in groups.items():
            keys = [k for cid in ids for k in window_keys(pid, cid)]
            commands.append(["EVALSHA", self._usage.sha, len(keys), *keys, now])

        def read(replies: Sequence[Any]) -> dict[str, dict[str, KeyUsage]]:
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
            return _parse_usage(groups, replies)

        return commands, read

    async def usage(self, groups: Mapping[str, Sequence[str]]) -> dict[str, dict[str, KeyUsage]]:
        """provider id -> credential ids  =>  provider id -> credential id -> usage (one round trip)."""
        groups = {pid: list(ids) for pid, ids in groups.items() if ids}
        if not groups:
            return {}
        now = self._now()
        keys = {pid: [k for cid in ids for k in window_keys(pid, cid)] for pid, ids in groups.items()}
        if len(keys) == 1:
            # The usual case, called directly: a Script inside a pipeline costs an extra SCRIPT EXISTS.
            replies = [await self._usage(keys=next(iter(keys.values())), args=[now])]
        else:
            replies = await self._usage_pipelined(keys, now)
        return _parse_usage(groups, replies)

    async def _usage_pipelined(self, keys: Mapping[str, list[str]], now: int) -> list:
        for _ in range(2):
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for provider_keys in keys.values():
                        # execute_command, not pipe.evalsha: a cluster pipeline refuses the
                        # helper but routes the raw command by its first key.
                        pipe.execute_command("EVALSHA", self._usage.sha, len(provider_keys), *provider_keys, now)
                    return await pipe.execute()
            except NoScriptError:
                await self._redis.script_load(self._usage.script)  # Redis restarted or flushed its scripts
        raise NoScriptError("the outbound usage script could not be loaded")

    async def acquire(
        self, provider_id: str, credential_id: str, *, rpm_limit: int | None, tpm_limit: int | None, tokens: int
    ) -> Taken | int:
        """A ``Taken`` slot, or the refusal reason (``REFUSED_*``)."""
        keys = list(window_keys(provider_id, credential_id))
        args = [self._now(), rpm_limit or 0, tpm_limit or 0, max(0, tokens)]
        if self._wire is not None:
            reply = await self._wire.script(self._acquire_wire, keys, args)
        else:
            reply = await self._acquire(keys=keys, args=args)
        ok, value = int(reply[0]), int(reply[1])
        return Taken(value, max(0, tokens)) if ok else value

    async def settle(
        self, provider_id: str, credential_id: str, taken: Taken, *, actual_tokens: int | None, cool_ms: int = 0
    ) -> None:
        delta = 0 if actual_tokens is None else actual_tokens - taken.tokens
        if delta == 0 and cool_ms <= 0:
            return
        _, tpm, cool = window_keys(provider_id, credential_id)
        args = [taken.second, self._now(), delta, max(0, cool_ms)]
        if self._wire is not None:
            await self._wire.script(self._settle_wire, [tpm, cool], args)
        else:
            await self._settle(keys=[tpm, cool], args=args)
