"""Provider health: one circuit breaker per provider, and the attempt window.

Closed → (``threshold`` consecutive failures) → open: no traffic for
``cooldown_s`` → half-open: one probe request at a time (a lease) → closed on
its success (which also clears the attempt window: the outage's failures no
longer describe the provider), open again (fresh cool-down) on its failure.  The health
monitor's probes report here too, so a provider with no traffic still opens
and recovers.

State lives in Redis, shared by every worker.  When Redis fails the tracker
carries on with in-process state (same rules, this worker only) and says so
in the log, once per minute: routing must not stop because Redis did.

Every transition is also noted in the provider event log (``events``: opened,
half-open when a probe lease is taken, closed, and opened again when the probe
fails): an in-memory append, flushed to Postgres off the request path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from redis.exceptions import RedisError

from relay_server.domain.provider_events import EventKind
from relay_server.observability.provider_events import ProviderEventLog
from relay_server.storage.redis.health import (
    LATENCY_BOUNDS_MS,
    WINDOW_S,
    CircuitState,
    RedisHealthStore,
    Transition,
    WindowStats,
    latency_bin,
    p95_from_bins,
)

log = logging.getLogger(__name__)

Availability = Literal["closed", "open", "half_open"]
Outcome = Literal["success", "failure", "neutral"]


@dataclass(frozen=True, slots=True)
class CircuitPolicy:
    threshold: int = 5
    cooldown_s: float = 30.0

    @property
    def cooldown_ms(self) -> int:
        return int(self.cooldown_s * 1000)


def availability(state: CircuitState, now_ms: int) -> Availability:
    if state.state != "open":
        return "closed"
    if now_ms < state.open_until_ms or state.probe_until_ms > now_ms:
        return "open"
    return "half_open"


class LocalHealth:
    """The same breaker and window in process memory (no Redis, or Redis down)."""

    def __init__(self, policy: CircuitPolicy, clock: Callable[[], float]) -> None:
        self._policy = policy
        self._clock = clock
        self._circuits: dict[str, CircuitState] = {}
        self._attempts: dict[str, deque[tuple[float, bool, int]]] = {}

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def state(self, provider_id: str) -> CircuitState:
        return self._circuits.get(provider_id, CircuitState("closed", 0, 0))

    def failure(self, provider_id: str) -> Transition:
        s = self.state(provider_id)
        failures = s.failures + 1
        if s.state == "open" or failures >= self._policy.threshold:
            new = CircuitState("open", failures, self._now_ms() + self._policy.cooldown_ms)
        else:
            new = CircuitState("closed", failures, 0)
        self._circuits[provider_id] = new
        return Transition(new.state, failures, new.open_until_ms, s.state != "open" and new.state == "open")

    def success(self, provider_id: str) -> Transition:
        s = self.state(provider_id)
        self._circuits[provider_id] = CircuitState("closed", 0, 0)
        return Transition("closed", 0, 0, s.state == "open")

    def probe(self, provider_id: str) -> tuple[bool, bool]:
        """(allowed, took the half-open probe lease)."""
        s = self.state(provider_id)
        now = self._now_ms()
        if availability(s, now) == "closed":
            return True, False
        if availability(s, now) == "open":
            return False, False
        self._circuits[provider_id] = CircuitState(s.state, s.failures, s.open_until_ms, now + self._policy.cooldown_ms)
        return True, True

    def release(self, provider_id: str) -> None:
        s = self.state(provider_id)
        self._circuits[provider_id] = CircuitState(s.state, s.failures, s.open_until_ms, 0)

    def record_attempt(self, provider_id: str, ok: bool, latency_ms: int) -> None:
        window = self._attempts.setdefault(provider_id, deque())
        now = self._clock()
        window.append((now, ok, latency_ms))
        while window and window[0][0] <= now - WINDOW_S:
            window.popleft()

    def reset_window(self, provider_id: str) -> None:
        self._attempts.pop(provider_id, None)

    def window(self, provider_id: str) -> WindowStats:
        now = self._clock()
        items = [a for a in self._attempts.get(provider_id, ()) if a[0] > now - WINDOW_S]
        bins = [0] * (len(LATENCY_BOUNDS_MS) + 1)
        for _, _, latency in items:
            bins[latency_bin(latency)] += 1
        return WindowStats(len(items), sum(1 for _, ok, _ in items if not ok), p95_from_bins(bins))


class HealthTracker:
    def __init__(
        self,
        store: RedisHealthStore | None,
        policy: CircuitPolicy | None = None,
        *,
        clock: Callable[[], float] = time.time,
        flush_s: float = 1.0,
        events: ProviderEventLog | None = None,
    ) -> None:
        self._store = store
        self._events = events
        # Providers whose half-open probe lease this worker holds: a failure then re-opens the circuit.
        self._probing: set[str] = set()
        self.policy = policy or CircuitPolicy()
        self._clock = clock
        self._local = LocalHealth(self.policy, clock)
        self._warned_at = -1e9
        # The circuit states this worker last saw in Redis (plan-time reads and op replies):
        # a success on a circuit known closed with no failures changes nothing, so it is not sent.
        self._seen: dict[str, CircuitState] = {}
        # Attempt-window samples waiting for the next flush (one pipeline per second instead of
        # one round trip per attempt); flushed early when this worker reads a window.
        self._pending: list[tuple[str, float, bool, int]] = []
        self._flush_s = flush_s
        self._flusher: asyncio.Task[None] | None = None

    def _degraded(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._warned_at > 60:
            self._warned_at = now
            log.warning("redis unavailable for provider health; using this worker's own state", extra={"error": repr(exc)})

    async def _op(self, provider_id: str, op: str) -> list | None:
        if self._store is None:
            return None
        try:
            return await self._store.circuit_op(
                provider_id, op, threshold=self.policy.threshold, cooldown_ms=self.policy.cooldown_ms,
                lease_ms=self.policy.cooldown_ms,
            )
        except (RedisError, OSError) as exc:
            self._degraded(exc)
            return None

    def _note(self, provider_id: str, kind: EventKind, message: str) -> None:
        if self._events is not None:
            self._events.note(provider_id, kind, message)

    def _from_reply(self, provider_id: str, reply: list) -> Transition:
        state, failures, open_until, changed = reply
        transition = Transition(
            state.decode() if isinstance(state, bytes) else str(state), int(failures), int(open_until), bool(int(changed))
        )
        self._seen[provider_id] = CircuitState(transition.state, transition.failures, transition.open_until_ms)
        return transition

    @property
    def store(self) -> RedisHealthStore | None:
        return self._store

    async def availability(self, provider_ids: Sequence[str]) -> dict[str, Availability]:
        states: dict[str, CircuitState] | None = None
        if self._store is not None:
            try:
                states = await self._store.circuits(list(provider_ids))
            except (RedisError, OSError) as exc:
                self._degraded(exc)
        if states is None:
            states = {pid: self._local.state(pid) for pid in provider_ids}
            return self._available(provider_ids, states)
        return self.availability_from(provider_ids, states)

    def availability_from(self, provider_ids: Sequence[str], states: dict[str, CircuitState]) -> dict[str, Availability]:
        """``availability`` from circuit states read in Redis by the caller (``circuit_reads``)."""
        self._seen.update(states)
        return self._available(provider_ids, states)

    def availability_without_redis(self, provider_ids: Sequence[str], exc: Exception) -> dict[str, Availability]:
        """``availability`` after the caller's Redis read failed: this worker's own state."""
        self._degraded(exc)
        return self._available(provider_ids, {pid: self._local.state(pid) for pid in provider_ids})

    def _available(self, provider_ids: Sequence[str], states: dict[str, CircuitState]) -> dict[str, Availability]:
        now_ms = int(self._clock() * 1000)
        return {pid: availability(states[pid], now_ms) for pid in provider_ids}

    async def circuits(self, provider_ids: Sequence[str]) -> dict[str, tuple[Availability, CircuitState]]:
        """Each provider's circuit (what routing would decide now, and the raw state), for operators."""
        states: dict[str, CircuitState] | None = None
        if self._store is not None:
            try:
                states = await self._store.circuits(list(provider_ids))
            except (RedisError, OSError) as exc:
                self._degraded(exc)
        if states is None:
            states = {pid: self._local.state(pid) for pid in provider_ids}
        available = self._available(provider_ids, states)
        return {pid: (available[pid], states[pid]) for pid in provider_ids}

    async def acquire_probe(self, provider_id: str) -> bool:
        """May a request go to this provider now?  (Takes the half-open probe lease if needed.)"""
        reply = await self._op(provider_id, "probe")
        if reply is None:
            allowed, half_open = self._local.probe(provider_id)
        else:
            allowed, half_open = bool(int(reply[0])), len(reply) > 1 and bool(int(reply[1]))
        if half_open:
            self._probing.add(provider_id)
            self._note(provider_id, "circuit_half_open", "cool-down over: one probe request let through")
        return allowed

    async def release_probe(self, provider_id: str) -> None:
        self._probing.discard(provider_id)
        if await self._op(provider_id, "release") is None:
            self._local.release(provider_id)

    async def record(self, provider_id: str, outcome: Outcome, latency_ms: int | None = None) -> Transition | None:
        """Feed one attempt's result to the breaker and the window.

        ``neutral`` (the provider answered, but with a client error or a
        per-key refusal) counts as a healthy sample without touching the breaker.
        """
        transition: Transition | None = None
        if outcome == "success" and self._store is not None and self._quiet(provider_id):
            transition = Transition("closed", 0, 0, False)  # what circuit.lua would answer, without the round trip
        elif outcome != "neutral":
            reply = await self._op(provider_id, outcome)
            if reply is None:
                self._seen.pop(provider_id, None)  # unknown in Redis now: send the next success
                transition = self._local.failure(provider_id) if outcome == "failure" else self._local.success(provider_id)
            else:
                transition = self._from_reply(provider_id, reply)
            probed = provider_id in self._probing
            self._probing.discard(provider_id)
            if transition.changed or (probed and transition.state == "open"):
                self._note_transition(provider_id, transition, probed)
            if transition.changed:
                log.warning(
                    "provider circuit %s", "opened" if transition.state == "open" else "closed",
                    extra={"provider_id": provider_id, "failures": transition.failures},
                )
                if transition.state == "closed":
                    # Recovered: the outage's failures no longer describe the provider.
                    await self._reset_window(provider_id)
        if latency_ms is not None:
            self._record_attempt(provider_id, outcome != "failure", latency_ms)
        return transition

    def _note_transition(self, provider_id: str, transition: Transition, probed: bool) -> None:
        if transition.state == "closed":
            self._note(provider_id, "circuit_closed", "the half-open probe succeeded" if probed else "an attempt succeeded")
        elif probed:
            self._note(provider_id, "circuit_opened", "the half-open probe failed: open again for a fresh cool-down")
        else:
            self._note(provider_id, "circuit_opened", f"{transition.failures} consecutive failures")

    def _quiet(self, provider_id: str) -> bool:
        seen = self._seen.get(provider_id)
        return seen is not None and seen.state == "closed" and seen.failures == 0

    def _record_attempt(self, provider_id: str, ok: bool, latency_ms: int) -> None:
        if self._store is None:
            self._local.record_attempt(provider_id, ok, latency_ms)
            return
        self._pending.append((provider_id, self._clock(), ok, latency_ms))
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_later())

    async def _flush_later(self) -> None:
        try:
            await asyncio.sleep(self._flush_s)
        finally:
            self._flusher = None
        await self.flush()

    async def flush(self) -> None:
        """Write the buffered attempt samples to Redis (into this worker's memory if Redis is down)."""
        pending, self._pending = self._pending, []
        if not pending or self._store is None:
            return
        try:
            await self._store.record_attempts([(pid, at, ok, ms) for pid, at, ok, ms in pending])
        except (RedisError, OSError) as exc:
            self._degraded(exc)
            for pid, _, ok, ms in pending:
                self._local.record_attempt(pid, ok, ms)

    async def close(self) -> None:
        """Flush what is buffered (graceful shutdown)."""
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        await self.flush()

    async def _reset_window(self, provider_id: str) -> None:
        self._pending = [p for p in self._pending if p[0] != provider_id]  # the outage's samples too
        self._local.reset_window(provider_id)
        if self._store is not None:
            try:
                await self._store.reset_window(provider_id)
            except (RedisError, OSError) as exc:
                self._degraded(exc)

    async def window(self, provider_id: str) -> WindowStats:
        if self._store is not None:
            await self.flush()
            try:
                return await self._store.window(provider_id)
            except (RedisError, OSError) as exc:
                self._degraded(exc)
        return self._local.window(provider_id)

    async def try_lead(self, name: str, owner: str, ttl_ms: int) -> bool:
        """Lead a background loop across workers; without Redis every worker leads."""
        if self._store is None:
            return True
        try:
            return await self._store.try_lead(name, owner, ttl_ms)
        except (RedisError, OSError) as exc:
            self._degraded(exc)
            return True
