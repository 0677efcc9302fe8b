"""The request path, step by step: authenticate → model → limits and spend
reservation → route → provider → stream relay → meter and settle.  Each step
lives in its own module; this one only orders them and guarantees that every
request is metered exactly once, however it ends (success, error, refusal,
client cancellation), and that its reservation is settled exactly once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from relay_server.domain.catalog import CatalogEntry
from relay_server.domain.metered import Metered, Outcome, RequestRecorder
from relay_server.domain.pricing import DEFAULT_MARKUP, price
from relay_server.domain.provider import NativeResponse, RequestKind
from relay_server.domain.request import RequestContext
from relay_server.errors import ErrorKind, RelayError
from relay_server.observability.request_context import attach
from relay_server.observability.tracing import step
from relay_server.pipeline.guardrails.step import Guardrails
from relay_server.pipeline.routing.catalog import Catalog
from relay_server.pipeline.routing.resolve import ModelResolver
from relay_server.pipeline.routing.route import Attempt, Router
from relay_server.pipeline.session import OutputFilter, StreamSession
from relay_server.pipeline.started import Started
from relay_server.pipeline.steps.admission import AdmissionGate, Ticket
from relay_server.pipeline.steps.authenticate import Authenticator
from relay_server.pipeline.steps.budget_route import budget_share
from relay_server.pipeline.steps.cache import CacheLookup, ResponseCache, cached_metered
from relay_server.pipeline.steps.meter import DefaultMarkup, MarkupSource
from relay_server.pipeline.steps.request_tags import parse_request_tags
from relay_server.pipeline.steps.usage_estimate import (
    OutputCounter,
    Reconciled,
    estimate_input_tokens,
    output_count_needed,
    reconcile,
)
from relay_server.pipeline.token_count import TokenCount, count_input_tokens

log = logging.getLogger(__name__)

_THREAD_COUNT_CHARS = 32_768  # count longer outputs off the event loop


@dataclass(slots=True)
class Admitted:
    """A request that passed every check before dispatch."""

    ctx: RequestContext
    entry: CatalogEntry
    input_tokens: int = 0
    markup: Decimal = DEFAULT_MARKUP
    ticket: Ticket | None = None
    credential_id: str | None = None
    dispatched: bool = False
    cache: CacheLookup | None = None
    """What the response cache decided (None when no cache is configured)."""
    route: Started[Sequence[Attempt]] | None = None
    """The live route, planned while admission ran (``InferencePipeline._prefetch_route``)."""
    output: OutputFilter | None = None
    """The request's output guardrails (None, the common case: items pass untouched)."""
    after_answer: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    """Bookkeeping of the attempt that answered, run by the metering task (``_finish``)."""

    @property
    def headers(self) -> dict[str, str]:
        """Response headers decided at admission (``x-ratelimit-*``)."""
        return dict(self.ticket.headers) if self.ticket is not None else {}


@dataclass(frozen=True, slots=True)
class UsagePolicy:
    discrepancy_ratio: float = 1.5
    discrepancy_slack: int = 512


class InferencePipeline:
    def __init__(
        self,
        authenticator: Authenticator,
        catalog: Catalog,
        router: Router,
        recorder: RequestRecorder,
        *,
        gate: AdmissionGate | None = None,
        markups: MarkupSource | None = None,
        usage_policy: UsagePolicy = UsagePolicy(),
        cache: ResponseCache | None = None,
        settle_after_response: bool = False,
        resolver: ModelResolver | None = None,
        guardrails: Guardrails | None = None,
    ) -> None:
        self._resolver = resolver or ModelResolver(catalog)
        self._guardrails = guardrails
        self._cache = cache
        self._auth = authenticator
        self._catalog = catalog
        self._router = router
        self._recorder = recorder
        self._gate = gate
        self._markups = markups or DefaultMarkup()
        self._usage_policy = usage_policy
        self._metering: set[asyncio.Future[None]] = set()
        # Metering and settling run after the answer has been handed back (``drain`` waits for them):
        # the reservation taken at admission keeps bounding concurrent spend until the settlement lands.
        self._settle_after = settle_after_response

    async def admit(
        self, kind: RequestKind, body: Mapping[str, Any], metadata: Mapping[str, str], request_id: str,
        *, door: str = "openai", native_body: Mapping[str, Any] | None = None,
    ) -> Admitted:
        """Authenticate, resolve the model, take limits and the spend reservation.

        ``body`` is the request in OpenAI's chat/completions shape, whatever the door; a door with
        its own dialect passes the client's original as ``native_body`` (kept for providers that
        speak that dialect, which receive it untouched).
        """
        ctx = RequestContext(
            request_id=request_id, kind=kind, body=body, metadata=metadata, door=door, native_body=native_body
        )
        admitted: Admitted | None = None
        attach(ctx)  # log lines and spans of this request carry its tenant, key hint, model and provider
        entry: CatalogEntry | None = None
        markup = DEFAULT_MARKUP
        try:
            with step("relay.authenticate"):
                ctx.principal = await self._auth.authenticate(metadata)
            name = str(body.get("model") or "")
            entry = self._resolver.resolve(ctx, name)  # a virtual model (docs/routing.md) or a catalog model
            rule = self._resolver.budget_route(ctx, name)
            ctx.model = ctx.virtual.name if ctx.virtual is not None else entry.relay_name
            ctx.tags = parse_request_tags(metadata)
            ctx.stream = kind != "embedding" and body.get("stream") is True
            options = body.get("stream_options") or {}
            ctx.include_usage = ctx.stream and isinstance(options, dict) and options.get("include_usage") is True
            input_tokens = estimate_input_tokens(kind, body, entry.relay_name)
            markup = await self._markup(ctx.principal.tenant_id)
            admitted = Admitted(ctx, entry, input_tokens, markup)
            if self._guardrails is not None:  # before routing: the route sees the body the provider will
                admitted.output = await self._guardrails.admit(ctx, input_tokens)
            if self._gate is not None:
                if rule is None:  # a budget route decides after admission, from the caps' state
                    admitted.route = self._prefetch_route(ctx, entry)
                with step("relay.admission"):  # rate limits and spend cap reservation
                    admitted.ticket = await self._gate.admit(ctx, entry, input_tokens, markup)
                share = budget_share(rule, admitted.ticket) if rule is not None else None
                if rule is not None and share is not None:
                    admitted.entry = entry = self._resolver.switch(ctx, rule, share)
        except BaseException as err:
            if admitted is not None:
                _discard(admitted.route)
            self._recorder.record(Metered(ctx, entry, _outcome(err), markup=markup))
            raise
        return admitted

    def _prefetch_route(self, ctx: RequestContext, entry: CatalogEntry) -> Started[Sequence[Attempt]] | None:
        """Plan a live request while admission runs: the planner's Redis reads (circuits,
        outbound usage) leave with admission's script, one round trip for both.  The plan
        runs in the request's own task up to its reads (``started.py``), no task of its own.

        Planning reads only, so planning a request that admission then refuses costs
        nothing but the reads; its errors surface after admission's, as before.
        """
        assert ctx.principal is not None
        if ctx.principal.is_test:
            return None  # test keys plan without I/O
        return Started(self._router.plan(ctx, entry))

    async def count_tokens(
        self, body: Mapping[str, Any], metadata: Mapping[str, str], request_id: str,
        *, door: str = "openai", native_body: Mapping[str, Any] | None = None,
    ) -> TokenCount:
        """A request's input tokens, counted by a provider of its model when one can, else estimated."""
        return await count_input_tokens(
            self._auth, self._resolver, self._router, body, metadata, request_id, door=door, native_body=native_body
        )

    def session(self, admitted: Admitted) -> StreamSession:
        """The admitted request's answer (pipeline/session.py): iterate it, or ``complete()`` it."""
        return StreamSession(self, admitted)

    async def complete(self, admitted: Admitted) -> dict[str, Any] | NativeResponse:
        """Non-streaming chat / completion / embeddings: one response body."""
        return await StreamSession(self, admitted).complete()

    def stream(self, admitted: Admitted) -> StreamSession:
        """Streaming chat / completion: client-ready items (OpenAI chunk dicts or native events)."""
        return StreamSession(self, admitted)

    async def plan(self, admitted: Admitted) -> Sequence[Attempt]:
        """Route the request, unless the response cache answers it (then its replay is the one attempt)."""
        router: _Planner = self._router if admitted.route is None else _Prefetched(admitted.route)
        try:
            if self._cache is None:
                with step("relay.route"):
                    return await router.plan(admitted.ctx, admitted.entry)
            with step("relay.cache_lookup"):
                admitted.cache = await self._cache.lookup(admitted.ctx, admitted.entry)
            with step("relay.route"):
                return await admitted.cache.attempts(router)
        finally:
            _discard(admitted.route)  # a cache hit (or a failure) did not need it

    async def _markup(self, tenant_id: str) -> Decimal:
        try:
            return await self._markups.markup_rate(tenant_id)
        except Exception:  # config never loaded and Postgres unreachable: serve, at the default markup
            log.warning("tenant markup unavailable; using the default", extra={"tenant_id": tenant_id}, exc_info=True)
            return DEFAULT_MARKUP

    async def settle(self, admitted: Admitted, error: BaseException | None, counter: OutputCounter) -> None:
        """Meter (exactly once: the session calls this once) and settle the reservation.

        A tracked task of its own, so a closing stream that is cancelled again
        cannot lose the record or the settlement.  With ``settle_after_response``
        (the server's setting) the caller does not wait for it: the response, or
        a stream's ``[DONE]``, goes out first and ``drain`` collects the rest.
        """
        task = asyncio.ensure_future(self._finish(admitted, error, counter))
        self._metering.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._finished)
        if not self._settle_after:
            await asyncio.shield(task)

    def _finished(self, task: asyncio.Future[None]) -> None:
        self._metering.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("metering a request failed", exc_info=task.exception())

    async def close(self) -> None:
        """Release what the pipeline holds open (the guardrail classifier's connections)."""
        if self._guardrails is not None:
            await self._guardrails.close()

    async def drain(self) -> None:
        """Wait until every request that has ended is metered and settled (graceful shutdown, tests)."""
        while self._metering:
            await asyncio.gather(*list(self._metering), return_exceptions=True)

    async def _finish(self, admitted: Admitted, error: BaseException | None, counter: OutputCounter) -> None:
        for bookkeeping in admitted.after_answer:
            await bookkeeping()  # the answering attempt's ticket: closing never raises
        if admitted.cache is not None and admitted.cache.hit is not None:
            # Served from the response cache: billed nothing, no provider tokens; the record keeps the saving.
            self._recorder.record(cached_metered(admitted, error, _outcome(error)))
            if self._gate is not None and admitted.ticket is not None:
                await self._gate.settle(admitted.ticket, cost_micros=0, total_tokens=0, tracked=True)
            return
        outcome = _outcome(error)
        reconciled = await self._billable_usage(admitted, outcome, counter)
        usage = reconciled.usage if reconciled else None
        cost = price(admitted.entry, usage, admitted.markup) if usage is not None else None
        self._recorder.record(
            Metered(
                admitted.ctx,
                admitted.entry,
                outcome,
                usage=usage,
                cost=cost,
                markup=admitted.markup,
                usage_source=reconciled.source if reconciled else None,
                credential_id=admitted.credential_id,
            )
        )
        if self._gate is not None and admitted.ticket is not None:
            await self._gate.settle(
                admitted.ticket,
                cost_micros=cost.total_micros if cost else 0,
                total_tokens=usage.total_tokens if usage else 0,
                tracked=True,  # this is the metering task (``settle``)
            )

    async def _billable_usage(self, admitted: Admitted, outcome: Outcome, counter: OutputCounter) -> Reconciled | None:
        """Provider usage, reconciled with the local count; the local count alone when the provider gave none.

        Nothing is billed for a request that failed before the provider produced anything.
        """
        ctx = admitted.ctx
        reported = ctx.usage
        if reported is None:
            produced = not counter.empty
            if not admitted.dispatched or not (produced or outcome.status in ("success", "cancelled")):
                return None
        model = admitted.entry.relay_name
        policy = self._usage_policy
        output = 0  # reconcile reads it only when output_count_needed says so
        if output_count_needed(reported, reasoning_tokens=counter.reasoning_tokens, slack=policy.discrepancy_slack):
            if counter.chars > _THREAD_COUNT_CHARS:
                output = await asyncio.to_thread(counter.tokens, model)
            else:
                output = counter.tokens(model)
        return reconcile(
            reported,
            admitted.input_tokens,
            output,
            reasoning_tokens=counter.reasoning_tokens,
            ratio=policy.discrepancy_ratio,
            slack=policy.discrepancy_slack,
        )


class _Planner(Protocol):
    async def plan(self, ctx: RequestContext, entry: CatalogEntry) -> Sequence[Attempt]: ...


class _Prefetched:
    """A router whose plan was already started (``_prefetch_route``)."""

    def __init__(self, route: Started[Sequence[Attempt]]) -> None:
        self._route = route

    async def plan(self, ctx: RequestContext, entry: CatalogEntry) -> Sequence[Attempt]:
        return await self._route


def _discard(route: Started[Sequence[Attempt]] | None) -> None:
    """Drop a prefetched plan nobody will use (usually it was awaited already): never reported."""
    if route is not None:
        route.discard()


def _outcome(error: BaseException | None) -> Outcome:
    if error is None:
        return Outcome("success", 200)
    if isinstance(error, (asyncio.CancelledError, GeneratorExit)):
        return Outcome("cancelled", 499, "client_closed_request")
    if isinstance(error, RelayError):
        status = "timeout" if error.kind is ErrorKind.REQUEST_TIMEOUT else "error"
        return Outcome(status, error.http_status, error.code, error.message)
    return Outcome("error", 500, "internal_error", type(error).__name__)
