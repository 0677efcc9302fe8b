"""Step 5a: the response cache — exact match in Redis, then semantic in Postgres.

Entry point for the pipeline: ``lookup = await cache.lookup(ctx, entry)``,
then ``attempts = await lookup.attempts(router)``.  On a hit the only attempt
is a ``ReplayProvider`` that answers with the cached body (or replays it as a
stream), so the pipeline serves a hit exactly like a provider answer; on a
miss the router's attempts come back with their providers wrapped so that a
successful answer — streamed or not — is stored on the way through.

When caching applies (docs/caching.md):
- the TTL is the ``x-relay-cache-ttl`` header (seconds; 0 turns caching off
  for the request), else the tenant's ``default_cache_ttl_sec``, else off;
- requests that sample (temperature > 0 without a seed) or offer tools
  bypass unless the tenant set ``cache_nondeterministic``;
- the semantic step runs when the plan feature ``semantic_cache`` is on and
  the database has pgvector; with the feature on and pgvector absent it says
  ``x-relay-cache-semantic: unavailable`` instead of failing.

The cache never fails a request: storage errors are logged and read as misses.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal, Protocol

from relay_server.domain.catalog import CatalogEntry
from relay_server.domain.metered import Metered, Outcome
from relay_server.domain.pricing import Cost, price
from relay_server.domain.provider import ProviderCall, Usage
from relay_server.domain.request import RequestContext
from relay_server.errors import ErrorKind, RelayError
from relay_server.ids import new_id
from relay_server.pipeline.routing.route import Attempt
from relay_server.pipeline.steps.embedder import Embedder, usable
from relay_server.pipeline.steps.tenant_flags import MAX_CACHE_TTL_S, FlagSource, TenantFlags
from relay_server.storage.postgres import response_cache as pg_cache
from relay_server.storage.postgres.pool import Database
from relay_server.storage.redis.response_cache import RedisResponseCache
from relay_server.text import cache_key
from relay_server.text.chunks import replay_chunks

log = logging.getLogger(__name__)

TTL_HEADER = "x-relay-cache-ttl"
STATUS_HEADER = "x-relay-cache"
KIND_HEADER = "x-relay-cache-kind"
SEMANTIC_HEADER = "x-relay-cache-semantic"

Status = Literal["off", "bypass", "hit", "miss"]
CacheKind = Literal["exact", "semantic"]


@dataclass(frozen=True, slots=True)
class CachedResponse:
    response: dict[str, Any]
    kind: CacheKind
    key: str
    similarity: float | None = None

    @property
    def usage(self) -> Usage | None:
        raw = self.response.get("usage")
        return Usage.from_openai(raw) if isinstance(raw, Mapping) else None


class _Router(Protocol):
    async def plan(self, ctx: RequestContext, entry: CatalogEntry) -> Sequence[Attempt]: ...


@dataclass(slots=True)
class _SemanticPlan:
    scope: str
    vector: list[float]


@dataclass(slots=True)
class CacheLookup:
    """What the cache decided for one request, and how to store its answer."""

    status: Status
    ctx: RequestContext
    entry: CatalogEntry
    hit: CachedResponse | None = None
    key: str | None = None
    ttl_s: int = 0
    semantic_unavailable: bool = False
    stored: bool = False
    _cache: ResponseCache | None = field(default=None, repr=False)
    _semantic: _SemanticPlan | None = field(default=None, repr=False)

    def headers(self) -> list[tuple[str, str]]:
        """Response headers: ``x-relay-cache: hit|miss|bypass`` (none when caching is off)."""
        out: list[tuple[str, str]] = []
        if self.status != "off":
            out.append((STATUS_HEADER, self.status))
        if self.hit is not None:
            out.append((KIND_HEADER, self.hit.kind))
        if self.semantic_unavailable:
            out.append((SEMANTIC_HEADER, "unavailable"))
        return out

    async def attempts(self, router: _Router) -> Sequence[Attempt]:
        """The attempts to run: the cached answer alone, or the router's (the stream session stores
        a miss's answer once it is complete)."""
        if self.hit is not None:
            call = ProviderCall(
                self.ctx.kind, self.ctx.body, self.entry.relay_name, self.ctx.request_id,
                door=self.ctx.door, native_body=self.ctx.native_body,
            )
            # No provider id: the request log shows a cache hit served by no provider.
            return [Attempt(None, ReplayProvider(self.ctx.kind, self.hit.response), call, self.entry)]  # type: ignore[arg-type]
        return await router.plan(self.ctx, self.entry)

    async def store(self, response: Mapping[str, Any]) -> None:
        """Keep a successful answer (once) for later identical or similar requests."""
        if self.stored or self.status != "miss" or self._cache is None or not isinstance(response, Mapping) \
                or not _storable(response):
            return
        self.stored = True
        await self._cache.store(self, response)


def _storable(response: Mapping[str, Any]) -> bool:
    choices = response.get("choices")
    return isinstance(choices, list) and bool(choices) and all(
        isinstance(c, Mapping) and c.get("finish_reason") for c in choices
    )


class ReplayProvider:
    """A provider that answers with a cached response body."""

    name = "cache"

    def __init__(self, kind: Any, response: Mapping[str, Any]) -> None:
        self._kind = kind
        self._response = response

    async def complete(self, call: ProviderCall) -> dict[str, Any]:
        return dict(self._response)

    async def stream(self, call: ProviderCall) -> AsyncIterator[dict[str, Any]]:
        for chunk in replay_chunks(self._kind, self._response):
            yield chunk

    async def embed(self, call: ProviderCall) -> dict[str, Any]:
        raise RelayError(ErrorKind.INTERNAL, "embeddings are not served from the response cache")


def request_ttl(metadata: Mapping[str, str], flags: TenantFlags) -> int:
    """Seconds to keep an answer: the header, else the tenant default; 0 = caching off."""
    raw = metadata.get(TTL_HEADER)
    if raw is None:
        return flags.default_cache_ttl_s
    raw = raw.strip()
    if not raw.isdigit() or int(raw) > MAX_CACHE_TTL_S:
        raise RelayError(
            ErrorKind.BAD_REQUEST,
            f"{TTL_HEADER} must be a whole number of seconds from 0 to {MAX_CACHE_TTL_S}.",
            code="invalid_header",
        )
    return int(raw)


class ResponseCache:
    def __init__(
        self,
        flags: FlagSource,
        exact: RedisResponseCache | None,
        db: Database | None = None,
        embedder: Embedder | None = None,
    ) -> None:
        self._flags = flags
        self._exact = exact
        self._db = db
        self._embedder = embedder

    async def lookup(self, ctx: RequestContext, entry: CatalogEntry) -> CacheLookup:
        """Decide for one admitted request; raises only for a malformed ``x-relay-cache-ttl``."""
        off = CacheLookup("off", ctx, entry)
        principal = ctx.principal
        if principal is None or ctx.kind not in cache_key.CACHEABLE_KINDS:
            return off
        flags = await self._flags.flags(principal.tenant_id)
        ttl = request_ttl(ctx.metadata, flags)
        if ttl <= 0:
            return off
        if not cache_key.is_deterministic(ctx.body) and not flags.cache_nondeterministic:
            return CacheLookup("bypass", ctx, entry)
        key = cache_key.exact_key(principal.tenant_id, principal.environment, ctx.kind, entry.model_id, ctx.body)
        lookup = CacheLookup("miss", ctx, entry, key=key, ttl_s=ttl, _cache=self)
        lookup.semantic_unavailable = flags.semantic_cache and not flags.vector_available
        if self._exact is not None:
            stored = await self._exact.get(principal.tenant_id, key)
            if stored is not None:
                lookup.status, lookup.hit = "hit", CachedResponse(stored.response, "exact", key)
                return lookup
        if flags.semantic_available and self._db is not None and self._embedder is not None:
            await self._semantic_lookup(lookup, flags)
        return lookup

    async def _semantic_lookup(self, lookup: CacheLookup, flags: TenantFlags) -> None:
        ctx, entry, principal = lookup.ctx, lookup.entry, lookup.ctx.principal
        assert principal is not None and self._db is not None and self._embedder is not None
        prompt = cache_key.last_user_text(ctx.kind, ctx.body)
        if prompt is None:
            return
        text, position = prompt
        try:
            vector = await self._embedder.embed(ctx.metadata, flags.embedding_model, cache_key.normalise_prompt(text))
        except Exception:  # noqa: BLE001 (an embedding failure must not fail the request)
            log.warning("semantic cache: embedding failed; skipping", extra={"request_id": ctx.request_id}, exc_info=True)
            return
        if not usable(vector):
            log.warning("semantic cache: embedding unusable; skipping", extra={"request_id": ctx.request_id})
            return
        assert vector is not None
        scope = cache_key.semantic_scope(principal.tenant_id, principal.environment, ctx.kind, entry.model_id, ctx.body, position)
        lookup._semantic = _SemanticPlan(scope, vector)
        try:
            async with self._db.tenant_tx(principal.tenant_id) as conn:
                match = await pg_cache.find_similar(
                    conn, tenant_id=principal.tenant_id, environment=principal.environment, model_id=entry.model_id,
                    scope=scope, vector=vector, threshold=flags.semantic_threshold,
                )
        except Exception:  # noqa: BLE001
            log.warning("semantic cache lookup failed; treating as a miss", extra={"request_id": ctx.request_id}, exc_info=True)
            return
        if match is not None:
            lookup.status = "hit"
            lookup.hit = CachedResponse(match.response, "semantic", match.cache_key, match.similarity)

    async def store(self, lookup: CacheLookup, response: Mapping[str, Any]) -> None:
        principal = lookup.ctx.principal
        assert principal is not None and lookup.key is not None
        body = dict(response)
        if self._exact is not None:
            await self._exact.put(principal.tenant_id, lookup.key, body, lookup.ttl_s)
        plan = lookup._semantic
        if plan is None or self._db is None:
            return
        usage = Usage.from_openai(body.get("usage")) if isinstance(body.get("usage"), Mapping) else None
        try:
            async with self._db.tenant_tx(principal.tenant_id) as conn:
                await pg_cache.upsert_entry(
                    conn, entry_id=new_id("rc"), tenant_id=principal.tenant_id, environment=principal.environment,
                    cache_key=lookup.key, model_id=lookup.entry.model_id, scope=plan.scope, response=body,
                    input_tokens=usage.prompt_tokens if usage else 0, output_tokens=usage.completion_tokens if usage else 0,
                    vector=plan.vector, ttl_s=lookup.ttl_s,
                )
        except Exception:  # noqa: BLE001
            log.warning("semantic cache store failed", extra={"request_id": lookup.ctx.request_id}, exc_info=True)


@dataclass(frozen=True, slots=True)
class CachedMetered(Metered):
    """The request-log record of a cache hit: billed nothing; ``cost_saved`` is what the provider would have cost."""

    cache_kind: CacheKind = "exact"
    cache_key: str = ""
    similarity: float | None = None
    cost_saved: Cost | None = None


def _zero_cost(markup: Decimal) -> Cost:
    zero = Decimal(0)
    return Cost(zero, zero, zero, zero, zero, markup)


def cached_metered(admitted: Any, error: BaseException | None, outcome: Outcome) -> CachedMetered:
    """What the pipeline records for a request the cache answered (``outcome`` when it failed midway)."""
    lookup: CacheLookup = admitted.cache
    hit = lookup.hit
    assert hit is not None
    usage = hit.usage
    return CachedMetered(
        admitted.ctx,
        admitted.entry,
        Outcome("cached", 200) if error is None else outcome,
        usage=usage,
        cost=_zero_cost(admitted.markup),
        markup=admitted.markup,
        usage_source="cache",
        cache_kind=hit.kind,
        cache_key=hit.key,
        similarity=hit.similarity,
        cost_saved=price(admitted.entry, usage, admitted.markup) if usage is not None else None,
    )


def cache_headers(admitted: Any) -> list[tuple[str, str]]:
    """The cache's response headers for an admitted request (none if the cache did not run)."""
    lookup = getattr(admitted, "cache", None)
    return lookup.headers() if isinstance(lookup, CacheLookup) else []
