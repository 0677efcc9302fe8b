"""The live router: a request's ordered (provider, credential) candidates.

Order, for the requested model and then each ``x-relay-fallback-models``
entry (each resolved and access-checked like the model itself):

1. the tenant's own keys (BYOK) on every provider that serves the model, then
   Relay's pooled keys — each by provider priority (lower first);
2. within one provider and owner: credential priority, then the key with the
   most remaining capacity in its outbound RPM/TPM windows.

Providers whose circuit is open are left out; half-open ones stay, and their
gate lets one probe request through.  Keys whose window has no room for this
request (or that are cooling down after a provider 429) are left out.  The
state read here only orders the plan: each attempt's gate re-checks the key
atomically when it is about to be used.

The gate is also the only place a credential is decrypted, for that one call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import orjson
from redis.exceptions import RedisError, ResponseError

from relay_server.crypto.envelope import DecryptionError, open_sealed
from relay_server.crypto.keyring import Keyring
from relay_server.domain.catalog import CatalogEntry
from relay_server.domain.provider import Credential, ProviderCall
from relay_server.domain.request import RequestContext
from relay_server.errors import ErrorKind, RelayError
from relay_server.pipeline.routing.catalog import Catalog
from relay_server.pipeline.routing.credential_cache import CredentialCache
from relay_server.pipeline.routing.health import Availability, HealthTracker, Outcome
from relay_server.pipeline.routing.latency import RouteLatency
from relay_server.pipeline.routing.provider_directory import ProviderDirectory
from relay_server.pipeline.routing.residency import in_region, outside_regions
from relay_server.pipeline.routing.route import Attempt, AttemptResult, RetryPolicy, RoutePlan
from relay_server.pipeline.routing.targets import Group, TargetPlanner
from relay_server.pipeline.routing.virtual_models import VirtualModels
from relay_server.storage.postgres.credentials import RoutableCredential
from relay_server.storage.postgres.providers import RouteRow
from relay_server.storage.redis.health import circuit_reads
from relay_server.storage.redis.outbound import KeyUsage, OutboundWindows, Taken
from relay_server.storage.redis.route_latency import RouteEwma, ewma_reads
from relay_server.storage.redis.wire import Wire

log = logging.getLogger(__name__)

FALLBACK_HEADER = "x-relay-fallback-models"
MAX_FALLBACK_MODELS = 5
DEFAULT_COOL_DOWN_S = 5  # a provider 429 without retry-after
MAX_COOL_DOWN_S = 60
_FAIL_OPEN = Taken(-1, 0)  # Redis down: the key is used without outbound accounting
_UNCOUNTED = Taken(-2, 0)  # a key without rpm/tpm limits: nothing to count (a 429 still cools it)


def estimate_tokens(body: Mapping[str, object]) -> int:
    """A cheap upper-ish estimate for outbound TPM (≈4 bytes per token + requested output).

    Outbound windows only steer traffic between keys and are reconciled with
    the provider's count afterwards, so a tokenizer pass is not worth its cost here.
    """
    source = body.get("messages") or body.get("prompt") or body.get("input") or ""
    size = len(source) if isinstance(source, str) else len(orjson.dumps(source))
    output = 0
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            output = value
            break
    return size // 4 + 1 + output


def headroom(cred: RoutableCredential, usage: KeyUsage | None, tokens: int) -> float | None:
    """Share of the key's tightest window still free, or None if this request does not fit."""
    if usage is None:
        return 1.0
    if usage.cooling_ms > 0:
        return None
    free = 1.0
    if cred.rpm_limit:
        if usage.requests + 1 > cred.rpm_limit:
            return None
        free = min(free, 1 - usage.requests / cred.rpm_limit)
    if cred.tpm_limit:
        if usage.tokens > 0 and usage.tokens + tokens > cred.tpm_limit:
            return None
        free = min(free, 1 - usage.tokens / cred.tpm_limit)
    return free


def parse_fallbacks(metadata: Mapping[str, str]) -> list[str]:
    raw = metadata.get(FALLBACK_HEADER, "")
    names: list[str] = []
    for part in raw.split(","):
        name = part.strip()
        if name and name not in names:
            names.append(name)
    if len(names) > MAX_FALLBACK_MODELS:
        raise RelayError(
            ErrorKind.BAD_REQUEST,
            f"{FALLBACK_HEADER} names at most {MAX_FALLBACK_MODELS} models.",
            code="invalid_header",
        )
    return names


class OutboundGuard:
    """Outbound windows that fail open: without Redis, keys are used unaccounted."""

    def __init__(self, windows: OutboundWindows | None) -> None:
        self._windows = windows

    @property
    def windows(self) -> OutboundWindows | None:
        return self._windows

    async def usage(self, groups: Mapping[str, Sequence[str]]) -> dict[str, dict[str, KeyUsage]]:
        if self._windows is None:
            return {}
        try:
            return await self._windows.usage(groups)
        except (RedisError, OSError):
            log.warning("outbound windows unavailable; routing without them", exc_info=True)
            return {}

    async def acquire(self, cred: RoutableCredential, tokens: int) -> Taken | None:
        """A slot on the key, or None if its windows are full.

        Keys without limits are not counted (two round trips saved per request):
        their headroom is 1.0 whatever their usage, and a cooling one was already
        left out of the plan by ``usage``.
        """
        if self._windows is None:
            return _FAIL_OPEN
        if not cred.rpm_limit and not cred.tpm_limit:
            return _UNCOUNTED
        try:
            taken = await self._windows.acquire(
                cred.provider_id, cred.id, rpm_limit=cred.rpm_limit, tpm_limit=cred.tpm_limit, tokens=tokens
            )
        except (RedisError, OSError):
            log.warning("outbound windows unavailable; key used unaccounted", exc_info=True)
            return _FAIL_OPEN
        return taken if isinstance(taken, Taken) else None

    async def settle(self, cred: RoutableCredential, taken: Taken, actual_tokens: int | None, cool_s: int) -> None:
        if self._windows is None:
            return
        try:
            if taken is not _FAIL_OPEN and taken is not _UNCOUNTED:
                await self._windows.settle(cred.provider_id, cred.id, taken, actual_tokens=actual_tokens, cool_ms=cool_s * 1000)
            elif cool_s:
                await self._windows.settle(cred.provider_id, cred.id, Taken(0, 0), actual_tokens=None, cool_ms=cool_s * 1000)
        except (RedisError, OSError):
            log.warning("outbound settle failed", exc_info=True)


@dataclass(slots=True)
class _RequestState:
    """Shared by one request's gates: providers that failed during this request."""

    suspect: set[str] = field(default_factory=set)


_BREAKER: dict[str, Outcome | None] = {
    "success": "success",
    "failure": "failure",
    "rejected": "neutral",
    "limited": "neutral",
    "refused": "neutral",
    "cancelled": None,
}


class KeyTicket:
    __slots__ = ("_gate", "_taken", "_probing", "_opened", "credential")

    def __init__(self, gate: KeyGate, taken: Taken, credential: Credential, probing: bool) -> None:
        self._gate = gate
        self._taken = taken
        self._probing = probing
        self._opened = time.monotonic()
        self.credential: Credential | None = credential

    async def close(self, result: AttemptResult) -> None:
        self.credential = None  # drop the plaintext as soon as the call is over
        gate = self._gate
        try:
            outcome = _BREAKER[result.outcome]
            if outcome is not None:
                await gate.health.record(gate.cred.provider_id, outcome, result.latency_ms)
            if self._probing and outcome in (None, "neutral"):
                await gate.health.release_probe(gate.cred.provider_id)
            if result.outcome == "failure":
                gate.state.suspect.add(gate.cred.provider_id)
            if gate.latency is not None and result.latency_ms is not None and result.outcome in ("success", "failure"):
                # A failure's latency counts too: a route that times out must look slow.
                total = int(((result.ended_at or time.monotonic()) - self._opened) * 1000)
                gate.latency.note(gate.model_id, gate.cred.provider_id, result.latency_ms, max(total, result.latency_ms))
            cool = 0
            if result.outcome == "limited":
                cool = min(max(result.retry_after_s or DEFAULT_COOL_DOWN_S, 1), MAX_COOL_DOWN_S)
            actual = result.tokens
            if actual is None and result.outcome not in ("success", "cancelled"):
                actual = 0  # refused before generating anything
            await gate.outbound.settle(gate.cred, self._taken, actual, cool)
        except Exception:  # noqa: BLE001 (bookkeeping must never fail the request)
            log.exception("recording an attempt failed")


class KeyGate:
    """Admits calls through one (provider, credential) candidate."""

    def __init__(
        self,
        cred: RoutableCredential,
        *,
        keyring: Keyring,
        health: HealthTracker,
        outbound: OutboundGuard,
        state: _RequestState,
        half_open: bool,
        tokens: int,
        model_id: str = "",
        latency: RouteLatency | None = None,
    ) -> None:
        self.model_id = model_id
        self.latency = latency
        self.cred = cred
        self.keyring = keyring
        self.health = health
        self.outbound = outbound
        self.state = state
        self.half_open = half_open
        self.tokens = tokens

    async def open(self) -> KeyTicket | None:
        pid = self.cred.provider_id
        # Closed at planning time and no failure since: skip the round trip.
        probing = self.half_open or pid in self.state.suspect
        if probing and not await self.health.acquire_probe(pid):
            return None
        taken = await self.outbound.acquire(self.cred, self.tokens)
        if taken is None:
            if probing:
                await self.health.release_probe(pid)
            return None
        try:
            # The ticket holds the plaintext for this call only; the keyring's opened-secrets
            # cache (crypto/opened.py) keeps it in worker memory so the next call skips decryption.
            secret = open_sealed(self.keyring, self.cred.sealed, self.cred.ref)
        except DecryptionError:
            log.error("provider credential does not decrypt; skipping it", extra={"credential_id": self.cred.id})
            await KeyTicket(self, taken, Credential(self.cred.id, ""), probing).close(AttemptResult("cancelled"))
            return None
        return KeyTicket(self, taken, Credential(self.cred.id, secret, self.cred.base_url or "", byok=self.cred.byok), probing)


class CandidatePlanner:
    """``LiveRouter``: plans live requests (see the module docstring)."""

    def __init__(
        self,
        catalog: Catalog,
        directory: ProviderDirectory,
        credentials: CredentialCache,
        health: HealthTracker,
        outbound: OutboundGuard,
        keyring: Keyring | None,
        *,
        policy: RetryPolicy | None = None,
        timeout_s: float = 600.0,
        state_reads: Wire | None = None,
        virtual: VirtualModels | None = None,
        latency: RouteLatency | None = None,
    ) -> None:
        self._catalog = catalog
        self._latency = latency or RouteLatency(None)
        self._targets = TargetPlanner(catalog, directory, virtual or VirtualModels(None))
        self._wire = state_reads  # circuits + outbound usage in one round trip (``_read_state``)
        self._directory = directory
        self._credentials = credentials
        self._health = health
        self._outbound = outbound
        self._keyring = keyring
        self._policy = policy or RetryPolicy()
        self._timeout_s = timeout_s

    def _models(self, ctx: RequestContext, entry: CatalogEntry) -> list[CatalogEntry]:
        assert ctx.principal is not None
        models = [entry]
        for name in parse_fallbacks(ctx.metadata):
            try:
                fallback = self._catalog.resolve(name, ctx.principal, ctx.kind)
            except RelayError as err:
                raise RelayError(
                    err.kind,
                    f"The fallback model `{name}` ({FALLBACK_HEADER}) does not exist, you do not have access to "
                    f"it, or it cannot serve this endpoint.",
                    param=FALLBACK_HEADER,
                    code=err.code,
                ) from None
            if fallback.model_id not in {m.model_id for m in models}:
                models.append(fallback)
        return models

    async def plan(self, ctx: RequestContext, entry: CatalogEntry) -> RoutePlan:
        assert ctx.principal is not None
        tokens = estimate_tokens(ctx.body)
        vm = ctx.virtual
        options = self._targets.options(ctx, vm, tokens) if vm is not None else []
        plain = self._models(ctx, entry) if vm is None else []
        if self._keyring is None:
            raise RelayError(ErrorKind.NO_PROVIDER_AVAILABLE, "No provider credentials are configured on this server.")
        creds = await self._credentials.for_tenant(ctx.principal.tenant_id)
        by_provider: dict[str, list[RoutableCredential]] = {}
        for cred in creds:
            by_provider.setdefault(cred.provider_id, []).append(cred)
        regions = ctx.principal.allowed_regions
        plain_routes = {m.model_id: self._directory.routes_for(m.model_id) for m in plain}
        if vm is not None:
            # Fallbacks (the virtual model's, then the header's) do not depend on the strategy: known
            # before the state read, so their providers' circuits are read with the others.
            tail = self._targets.fallbacks(ctx, vm, tokens) + [
                Group(m, tuple(r for r in self._directory.routes_for(m.model_id) if in_region(r, regions)), FALLBACK_HEADER)
                for m in self._models(ctx, entry)[1:]
            ]
        else:
            tail = [
                Group(m, tuple(r for r in plain_routes[m.model_id] if in_region(r, regions)), "" if m is entry else FALLBACK_HEADER)
                for m in plain
            ]
        provider_ids = list(dict.fromkeys(
            [o.route.provider_id for o in options] + [r.provider_id for g in tail for r in g.routes]
        ))  # fmt: skip
        provider_ids = [pid for pid in provider_ids if pid in by_provider]
        pairs = self._targets.latency_pairs(vm, options) if vm is not None else []
        available, usage, latency = await self._read_state(
            provider_ids, {pid: [c.id for c in by_provider[pid]] for pid in provider_ids}, pairs
        )
        groups = (self._targets.ranked(ctx, vm, options, latency) if vm is not None else []) + tail
        state = _RequestState()
        attempts: list[Attempt] = []
        for group in groups:
            routes = [r for r in group.routes if r.provider_id in by_provider and available[r.provider_id] != "open"]
            for byok in (True, False):
                for route in routes:
                    keys = [c for c in by_provider[route.provider_id] if c.byok == byok]
                    attempts.extend(
                        self._attempt(ctx, group, route, cred, available[route.provider_id], state, tokens)
                        for cred in self._order(keys, usage.get(route.provider_id, {}), tokens)
                    )
        if not attempts:
            if regions and vm is None and any(plain_routes.values()) and not any(g.routes for g in tail):
                raise outside_regions(entry.relay_name, regions)
            name = vm.name if vm is not None else entry.relay_name
            raise RelayError(ErrorKind.NO_PROVIDER_AVAILABLE, f"No provider is available to serve `{name}` right now.")
        return RoutePlan(attempts, self._policy)

    async def _read_state(
        self, provider_ids: list[str], groups: dict[str, list[str]], pairs: list[tuple[str, str]]
    ) -> tuple[dict[str, Availability], dict[str, dict[str, KeyUsage]], dict[tuple[str, str], RouteEwma]]:
        """Circuits and outbound usage in ONE Redis round trip (over the per-request connection).

        An error reply (the usage script flushed) falls back to the two separate reads, which
        reload it; Redis unreachable degrades both at once, as the separate reads would (circuits
        from this worker's memory, keys used without outbound accounting).
        """
        windows = self._outbound.windows
        if provider_ids and self._wire is not None and self._health.store is not None and windows is not None:
            circuit_commands, read_circuits = circuit_reads(provider_ids)
            usage_commands, read_usage = windows.usage_reads(groups)
            # Route latencies (lowest-latency strategy) ride along: still one round trip.
            ewma_commands, read_ewma = ewma_reads(pairs if self._latency.store is not None else [])
            try:
                replies = await self._wire.batch([*circuit_commands, *usage_commands, *ewma_commands])
                n, u = len(circuit_commands), len(circuit_commands) + len(usage_commands)
                states, usage = read_circuits(replies[:n]), read_usage(replies[n:u])
                latency = read_ewma(replies[u:]) if self._latency.store is not None else self._latency.local(pairs)
            except ResponseError:
                pass  # e.g. NOSCRIPT after a flush: the separate reads below reload the script
            except (RedisError, OSError) as exc:  # unreachable: degrade at once, no second try
                log.warning("outbound windows unavailable; routing without them", exc_info=True)
                return self._health.availability_without_redis(provider_ids, exc), {}, self._latency.local(pairs)
            else:
                return self._health.availability_from(provider_ids, states), usage, latency
        return await self._health.availability(provider_ids), await self._outbound.usage(groups), await self._latency.read(pairs)

    @staticmethod
    def _order(keys: list[RoutableCredential], usage: Mapping[str, KeyUsage], tokens: int) -> list[RoutableCredential]:
        room = {c.id: headroom(c, usage.get(c.id), tokens) for c in keys}
        usable = [c for c in keys if room[c.id] is not None]
        return sorted(usable, key=lambda c: (c.priority, -(room[c.id] or 0.0), c.id))

    def _attempt(
        self, ctx: RequestContext, group: Group, route: RouteRow, cred: RoutableCredential,
        availability: Availability, state: _RequestState, tokens: int,
    ) -> Attempt:
        assert self._keyring is not None
        call = ProviderCall(
            kind=ctx.kind, body=ctx.body, provider_model=route.provider_name, request_id=ctx.request_id,
            timeout_s=self._timeout_s, door=ctx.door, native_body=ctx.native_body,
            native_headers=ctx.native_headers,
        )
        gate = KeyGate(
            cred, keyring=self._keyring, health=self._health, outbound=self._outbound, state=state,
            half_open=availability == "half_open", tokens=tokens, model_id=group.entry.model_id, latency=self._latency,
        )
        provider = self._directory.provider(route.provider_id)
        return Attempt(route.provider_id, provider, call, group.entry, cred.id, cred.byok, gate, group.reason)
