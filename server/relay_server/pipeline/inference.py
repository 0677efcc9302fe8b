"""The request path, step by step: authenticate → model → route → provider →
stream relay → meter.  Each step lives in its own module; this one only orders
them and guarantees that every request is metered exactly once, however it ends
(success, error, client cancellation).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from relay_server.errors import ErrorKind, RelayError
from relay_server.pipeline.authenticate import Authenticator
from relay_server.pipeline.catalog import Catalog, CatalogEntry
from relay_server.pipeline.context import RequestContext
from relay_server.pipeline.meter import DEFAULT_MARKUP, Outcome, RequestRecorder, price
from relay_server.pipeline.route import Attempt, Router
from relay_server.pipeline.stream import relay_stream
from relay_server.providers.base import RequestKind, Usage


@dataclass(slots=True)
class Admitted:
    """A request that passed every check before dispatch."""

    ctx: RequestContext
    entry: CatalogEntry


class InferencePipeline:
    def __init__(self, authenticator: Authenticator, catalog: Catalog, router: Router, recorder: RequestRecorder) -> None:
        self._auth = authenticator
        self._catalog = catalog
        self._router = router
        self._recorder = recorder

    async def admit(
        self, kind: RequestKind, body: Mapping[str, Any], metadata: Mapping[str, str], request_id: str
    ) -> Admitted:
        ctx = RequestContext(request_id=request_id, kind=kind, body=body, metadata=metadata)
        try:
            ctx.principal = await self._auth.authenticate(metadata)
            entry = self._catalog.resolve(str(body.get("model") or ""), ctx.principal, kind)
        except RelayError as err:
            self._finish(ctx, None, err)
            raise
        ctx.model = entry.relay_name
        ctx.stream = kind != "embedding" and body.get("stream") is True
        options = body.get("stream_options") or {}
        ctx.include_usage = ctx.stream and isinstance(options, dict) and options.get("include_usage") is True
        return Admitted(ctx, entry)

    async def complete(self, admitted: Admitted) -> dict[str, Any]:
        """Non-streaming chat / completion / embeddings: one response body."""
        ctx, entry = admitted.ctx, admitted.entry
        try:
            attempts = await self._router.plan(ctx, entry)
            response = await self._first_success(ctx, attempts)
        except BaseException as exc:
            self._finish(ctx, entry, exc)
            raise
        ctx.usage = Usage.from_openai(response.get("usage"))
        self._finish(ctx, entry, None)
        return response

    async def stream(self, admitted: Admitted) -> AsyncIterator[dict[str, Any]]:
        """Streaming chat / completion: client-ready chunk dicts."""
        ctx, entry = admitted.ctx, admitted.entry
        error: BaseException | None = None
        try:
            attempts = await self._router.plan(ctx, entry)
            attempt = attempts[0]
            ctx.provider_id = attempt.provider_id
            ctx.attempts = 1
            async for chunk in relay_stream(ctx, attempt.provider.stream(attempt.call)):
                yield chunk
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._finish(ctx, entry, error)

    async def _first_success(self, ctx: RequestContext, attempts: Sequence[Attempt]) -> dict[str, Any]:
        last: RelayError | None = None
        for attempt in attempts:
            ctx.provider_id = attempt.provider_id
            ctx.attempts += 1
            try:
                if ctx.kind == "embedding":
                    return await attempt.provider.embed(attempt.call)
                return await attempt.provider.complete(attempt.call)
            except RelayError as err:
                if not err.retryable:
                    raise
                last = err
        raise last or RelayError(ErrorKind.NO_PROVIDER_AVAILABLE, "No provider is available for this model.")

    def _finish(self, ctx: RequestContext, entry: CatalogEntry | None, error: BaseException | None) -> None:
        outcome = _outcome(error)
        cost = price(entry, ctx.usage, self._markup(ctx)) if entry is not None and ctx.usage is not None else None
        self._recorder.record(ctx, entry, outcome, cost)

    def _markup(self, ctx: RequestContext) -> Decimal:
        return DEFAULT_MARKUP


def _outcome(error: BaseException | None) -> Outcome:
    if error is None:
        return Outcome("success", 200)
    if isinstance(error, (asyncio.CancelledError, GeneratorExit)):
        return Outcome("cancelled", 499, "client_closed_request")
    if isinstance(error, RelayError):
        status = "timeout" if error.kind is ErrorKind.REQUEST_TIMEOUT else "error"
        return Outcome(status, error.http_status, error.code, error.message)
    return Outcome("error", 500, "internal_error", type(error).__name__)
