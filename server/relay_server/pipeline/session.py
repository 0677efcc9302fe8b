"""One request's answer, as one small state machine: the stream session.

    planned ──▶ attempting ──first item──▶ committed ──end / error / close──▶ finished
       └──────────────── error before the first item ─────────────────────────▲

* **attempting**: the route (or the response cache's replay) is tried in order until an
  attempt yields its first item (``FailoverStream``); until then every failure can still
  become a proper HTTP status, which is why doors wait for the first item before they
  send anything.
* **committed**: each item passes through ``__anext__`` once: the provider's usage is
  captured (OpenAI usage chunks, or a native event's merged usage), the output is counted
  (the fallback when a provider reports no usage), the first output marks time to first
  token, and the usage chunk is shown only to a client that asked for it
  (``stream_options.include_usage``; then, as OpenAI does, every other chunk carries
  ``"usage": null``).  A cache miss assembles the answer and stores it at the end.
* **finished**: metered and settled exactly once, however the session ended: the provider
  finished, failed mid-way (the door sends the error in-band), or the client went away
  (``aclose``; billed for what was generated).

An admitted request may carry an ``OutputFilter`` (its output guardrails): every item the
session shows passes through it, and what it still holds back comes out when the provider
ends.  Without one (the common case) nothing is called.

Non-streaming requests are the degenerate case (``complete``): one attempt loop, one
answer, the same finish.  Doors iterate a session and encode its items into frames; the
session never knows which door drives it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from relay_server.domain.provider import NativeEvent, NativeResponse, Usage
from relay_server.observability.tracing import step
from relay_server.pipeline.routing.failover import FailoverStream, complete_with_failover
from relay_server.pipeline.steps.usage_estimate import OutputCounter
from relay_server.text.chunks import ChunkAssembler

if TYPE_CHECKING:
    from relay_server.pipeline.inference import Admitted, InferencePipeline

log = logging.getLogger(__name__)

Item = dict[str, Any] | NativeEvent
"""What a session yields: an OpenAI chunk dict, or an event in the door's own dialect."""
Response = dict[str, Any] | NativeResponse


class OutputFilter(Protocol):
    """Rewrites a request's output on its way to the client (installed at admission)."""

    def item(self, item: Item) -> Item:
        """The item as shown (raising a ``RelayError`` ends the stream with it)."""
        ...

    def end(self) -> list[Item]:
        """Items still owed when the provider's stream ended."""
        ...

    async def response(self, response: Response, again: Callable[[], Awaitable[Response]]) -> Response:
        """A whole answer as shown; ``again`` asks the provider once more (billed too)."""
        ...


class StreamSession:
    """Async iterator over a streamed answer; ``complete()`` for a non-streamed one."""

    __slots__ = ("_admitted", "_assembler", "_counter", "_finished", "_include_usage", "_owed", "_pipeline", "_upstream")

    def __init__(self, pipeline: InferencePipeline, admitted: Admitted) -> None:
        self._pipeline = pipeline
        self._admitted = admitted
        self._counter = OutputCounter()
        self._upstream: FailoverStream | None = None
        self._assembler: ChunkAssembler | None = None
        self._finished = False
        self._include_usage = admitted.ctx.include_usage
        self._owed: deque[Item] | None = None  # the output filter's items after the provider's end

    @property
    def admitted(self) -> Admitted:
        return self._admitted

    @property
    def buffered(self) -> int:
        """Upstream items ready without waiting: a door may frame them together with the last one.
        An item the session then hides (a usage chunk not asked for) still counts: a hint, not a promise."""
        return self._upstream.buffered if self._upstream is not None else 0

    # -- streamed -------------------------------------------------------------------------

    def __aiter__(self) -> StreamSession:
        return self

    async def __anext__(self) -> Item:
        upstream = self._upstream
        try:
            if self._owed is not None:
                if self._owed:
                    return self._owed.popleft()
                raise StopAsyncIteration
            if upstream is None:
                upstream = await self._attempt()
            output = self._admitted.output
            while True:
                try:
                    item = await anext(upstream)
                except StopAsyncIteration:
                    if output is None:
                        raise
                    self._owed = deque(output.end())
                    if not self._owed:
                        raise
                    return self._owed.popleft()
                shown = self._take(item)
                if shown is not None:
                    return shown if output is None else output.item(shown)
        except StopAsyncIteration:
            if self._assembler is not None and self._assembler.finished:
                await self._store(self._assembler.response())
            await self._finish(None)
            raise
        except BaseException as exc:
            if upstream is not None:
                await upstream.aclose()
            await self._finish(exc)
            raise

    async def _attempt(self) -> FailoverStream:
        attempts = await self._pipeline.plan(self._admitted)
        self._admitted.dispatched = True
        lookup = self._admitted.cache
        # A filtered answer is not stored: the cache would keep what the filter hid from the client.
        if (lookup is not None and lookup.status == "miss" and self._admitted.ctx.kind in ("chat", "completion")
                and self._admitted.output is None):
            self._assembler = ChunkAssembler(self._admitted.ctx.kind)
        self._upstream = FailoverStream(self._admitted.ctx, attempts, self._admitted)
        return self._upstream

    def _take(self, item: Item) -> Item | None:
        """Capture usage and count output; the item as the client sees it (None: not shown)."""
        ctx = self._admitted.ctx
        if isinstance(item, NativeEvent):
            self._assembler = None  # a native stream is not an OpenAI answer the cache could replay
            if item.usage is not None:
                ctx.usage = item.usage
            if item.output:
                ctx.mark_first_token()
            if item.text:
                self._counter.add_text(item.text)
            return item
        raw_usage = item.get("usage")
        if raw_usage:
            # Usually the last chunk (choices: []), for some providers the last content chunk.
            ctx.usage = Usage.from_openai(raw_usage)
            self._counter.note_reported(raw_usage)
        if self._assembler is not None:
            self._assembler.add(item)
        if not item.get("choices") and raw_usage is not None:
            return item if self._include_usage else None
        ctx.mark_first_token()
        self._counter.add_chunk(item)
        if self._include_usage:
            return {**item, "usage": None}
        if "usage" in item:
            return {k: v for k, v in item.items() if k != "usage"}  # not asked for
        return item

    async def aclose(self) -> None:
        """The door is done with the stream: at its end, or early (client gone, in-band error)."""
        if self._finished:
            return
        if self._upstream is not None:
            await self._upstream.aclose()
        await self._finish(asyncio.CancelledError())

    # -- not streamed ---------------------------------------------------------------------

    async def complete(self) -> dict[str, Any] | NativeResponse:
        """The whole answer: an OpenAI response body, or the provider's own for a native door."""
        try:
            attempts = await self._pipeline.plan(self._admitted)
            self._admitted.dispatched = True
            response = await self._answer(attempts)
            if self._admitted.output is not None:
                response = await self._admitted.output.response(response, lambda: self._answer(attempts))
        except BaseException as exc:
            await self._finish(exc)
            raise
        await self._finish(None)
        return response

    async def _answer(self, attempts: Any) -> Response:
        """One provider answer, its usage added to the request's (a guardrail's retry is billed too)."""
        ctx = self._admitted.ctx
        earlier = ctx.usage
        response = await complete_with_failover(ctx, attempts, served=self._admitted)
        if isinstance(response, NativeResponse):
            ctx.usage = response.usage
            self._counter.add_text(response.text)
        else:
            raw_usage = response.get("usage")
            reported = raw_usage if isinstance(raw_usage, (dict, Mapping)) else None  # dict first: no ABC check
            ctx.usage = Usage.from_openai(reported) if reported is not None else None
            self._counter.note_reported(reported)
            self._counter.add_response(response)
            if self._admitted.output is None:
                await self._store(response)
        if earlier is not None and ctx.usage is not None:
            ctx.usage = earlier + ctx.usage
        return response

    async def _store(self, response: dict[str, Any]) -> None:
        """Keep a cache miss's complete answer; the cache never fails the request that fed it."""
        lookup = self._admitted.cache
        if lookup is None:
            return
        try:
            with step("relay.cache_store"):
                await lookup.store(response)
        except Exception:  # noqa: BLE001
            log.warning("response cache store failed", extra={"request_id": self._admitted.ctx.request_id}, exc_info=True)

    async def _finish(self, error: BaseException | None) -> None:
        if self._finished:
            return
        self._finished = True
        await self._pipeline.settle(self._admitted, error, self._counter)
