"""``HttpProvider``: runs one ``Translator`` over the shared ``HttpClient``.

All provider-specific knowledge lives in the translator; this class only moves
bytes and enforces the stream contract: chunks are yielded as events arrive,
the stream either reaches the provider's end marker or raises (never a silent
truncation), and an early exit closes the upstream connection.

Callers that may stop iterating before the end should close the generator
(``contextlib.aclosing``); a task cancelled while awaiting the next chunk
closes the connection by itself.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Mapping
from typing import Any

import orjson

from relay_server.domain.provider import Credential, NativeEvent, NativeResponse, ProviderCall
from relay_server.providers.http_client import Timeouts
from relay_server.providers.translator import Translator, UpstreamRequest, malformed_failure
from relay_server.providers.upstream_http import UpstreamHttp


def _guarded(request: UpstreamRequest, credential: Credential | None) -> UpstreamRequest:
    """Mark requests to a tenant-chosen base URL for the client's connect-time address check."""
    if credential is not None and credential.byok and credential.base_url:
        return dataclasses.replace(request, guarded=True)
    return request


class HttpProvider:
    """One provider API.  ``translator`` serves OpenAI-shaped calls (every door's common form);
    ``by_door`` adds the (door × this provider) pairs that speak the door's own dialect natively,
    chosen per call by ``call.door`` — a Claude model behind the Anthropic door, say."""

    def __init__(
        self,
        name: str,
        translator: Translator,
        client: UpstreamHttp,
        timeouts: Timeouts | None = None,
        *,
        by_door: Mapping[str, Translator] | None = None,
    ) -> None:
        self.name = name
        self.translator = translator
        self._by_door = dict(by_door or {})
        self._client = client
        self._timeouts = timeouts or Timeouts()

    def translator_for(self, call: ProviderCall) -> Translator:
        # No native body: the request must take the translated path (a guardrail rewrote its input or rewrites its output).
        if not self._by_door or call.native_body is None:
            return self.translator
        return self._by_door.get(call.door, self.translator)

    async def complete(self, call: ProviderCall) -> dict[str, Any] | NativeResponse:
        return await self._exchange(call)

    async def embed(self, call: ProviderCall) -> dict[str, Any] | NativeResponse:
        return await self._exchange(call)

    async def count_tokens(self, call: ProviderCall) -> int | None:
        """The provider's own count of the call's input tokens, or None when the pair cannot count
        (only translators with a ``count_tokens_request`` can)."""
        translator = self.translator_for(call)
        build = getattr(translator, "count_tokens_request", None)
        if build is None:
            return None
        _, body = await self._send(translator, build(call), call.timeout_s)
        counted = body.get("input_tokens")
        if not isinstance(counted, int) or isinstance(counted, bool):
            raise malformed_failure("token count without an integer input_tokens")
        return counted

    async def list_models(self, credential: Credential | None, timeout_s: float = 30.0) -> dict[str, Any]:
        """The provider's models as an OpenAI list (health checks, catalog sync)."""
        _, body = await self._send(self.translator, _guarded(self.translator.models_request(credential), credential), timeout_s)
        return self.translator.models_response(body)

    async def _exchange(self, call: ProviderCall) -> dict[str, Any] | NativeResponse:
        translator = self.translator_for(call)
        request = _guarded(translator.request(call, stream=False), call.credential)
        status, body = await self._send(translator, request, call.timeout_s)
        return translator.response(status, body, call)

    async def _send(
        self, translator: Translator, request: UpstreamRequest, timeout_s: float
    ) -> tuple[int, dict[str, Any]]:
        resp = await self._client.send(request, self._timeouts, timeout_s)
        if resp.status >= 400:
            raise translator.error(resp.status, resp.body, resp.headers)
        try:
            body = orjson.loads(resp.body)
        except orjson.JSONDecodeError as exc:
            raise malformed_failure(f"response body is not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise malformed_failure("response body is not a JSON object")
        return resp.status, body

    def stream(self, call: ProviderCall) -> HttpStream:
        return HttpStream(self._client, self.translator_for(call), call, self._timeouts)


class HttpStream:
    """One streamed provider call: the translated items of each upstream read, one per ``__anext__``.

    Everything one socket read brought is translated at once and held; ``buffered`` says how many
    items are ready without waiting for the network, so a door can send them to its client as one
    frame (one gRPC message and one Envoy write instead of several — the per-message cost dominates
    a stream's CPU).  A translator error in a later event of the same read is raised only after the
    items before it were handed out, as if they had been read one by one.

    The stream either reaches the provider's end marker or raises (never a silent truncation);
    ``aclose`` — or a task cancelled while waiting — closes the upstream connection.
    """

    __slots__ = ("_call", "_client", "_error", "_opened", "_pending", "_state", "_timeouts", "_translator", "_upstream")

    def __init__(self, client: UpstreamHttp, translator: Translator, call: ProviderCall, timeouts: Timeouts) -> None:
        self._client = client
        self._translator = translator
        self._call = call
        self._timeouts = timeouts
        self._opened: Any = None  # the open_stream context manager, once entered
        self._upstream: Any = None
        self._state: Any = None
        self._pending: deque[dict[str, Any] | NativeEvent] = deque()
        self._error: BaseException | None = None

    @property
    def buffered(self) -> int:
        """Items ready without waiting for the network, plus one when the stream's end is known
        (the provider's end marker was read): the next ``__anext__`` will not wait."""
        ended = self._state is not None and (self._upstream is None or self._state.done)
        return len(self._pending) + (1 if ended else 0)

    def __aiter__(self) -> HttpStream:
        return self

    async def __anext__(self) -> dict[str, Any] | NativeEvent:
        if self._pending:
            return self._pending.popleft()
        try:
            if self._error is not None:
                raise self._error
            if self._upstream is None:
                if self._state is not None:  # already ended
                    raise StopAsyncIteration
                await self._open()
            while not self._pending:
                if self._state.done:
                    await self._upstream.drain()
                    await self._close(None)
                    raise StopAsyncIteration
                await self._read()
        except StopAsyncIteration:
            raise
        except BaseException as exc:
            await self._close(exc)
            raise
        return self._pending.popleft()

    async def _open(self) -> None:
        translator, call = self._translator, self._call
        request = _guarded(translator.request(call, stream=True), call.credential)
        opened = self._client.open_stream(request, self._timeouts, call.timeout_s)
        upstream = await opened.__aenter__()
        self._opened, self._upstream = opened, upstream
        if upstream.status >= 400:
            body = await upstream.read_body()
            raise translator.error(upstream.status, body, upstream.headers)
        self._state = translator.stream_events(call)

    async def _read(self) -> None:
        state = self._state
        events = await self._upstream.next_events()
        try:
            if events is None:
                # Connection ended: the translator decides whether that was
                # a complete stream or a cut one (it raises if cut).
                self._pending.extend(state.finish())
                await self._close(None)
                if not self._pending:
                    raise StopAsyncIteration
                return
            for event in events:
                self._pending.extend(state.feed(event))
                if state.done:
                    break
        except StopAsyncIteration:
            raise
        except Exception as exc:  # noqa: BLE001 (raised in turn, after the items read before it)
            if not self._pending:
                raise
            self._error = exc

    async def _close(self, exc: BaseException | None) -> None:
        opened, self._opened, self._upstream = self._opened, None, None
        if opened is not None:
            await opened.__aexit__(type(exc) if exc else None, exc, exc.__traceback__ if exc else None)

    async def aclose(self) -> None:
        self._pending.clear()
        await self._close(None)
