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

from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson

from relay_server.domain.provider import Credential, NativeEvent, NativeResponse, ProviderCall
from relay_server.providers.http_client import HttpClient, Timeouts
from relay_server.providers.translator import Translator, UpstreamRequest, malformed_failure


class HttpProvider:
    """One provider API.  ``translator`` serves OpenAI-shaped calls (every door's common form);
    ``by_door`` adds the (door × this provider) pairs that speak the door's own dialect natively,
    chosen per call by ``call.door`` — a Claude model behind the Anthropic door, say."""

    def __init__(
        self,
        name: str,
        translator: Translator,
        client: HttpClient,
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
        return self._by_door.get(call.door, self.translator) if self._by_door else self.translator

    async def complete(self, call: ProviderCall) -> dict[str, Any] | NativeResponse:
        return await self._exchange(call)

    async def embed(self, call: ProviderCall) -> dict[str, Any] | NativeResponse:
        return await self._exchange(call)

    async def list_models(self, credential: Credential | None, timeout_s: float = 30.0) -> dict[str, Any]:
        """The provider's models as an OpenAI list (health checks, catalog sync)."""
        _, body = await self._send(self.translator, self.translator.models_request(credential), timeout_s)
        return self.translator.models_response(body)

    async def _exchange(self, call: ProviderCall) -> dict[str, Any] | NativeResponse:
        translator = self.translator_for(call)
        status, body = await self._send(translator, translator.request(call, stream=False), call.timeout_s)
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

    async def stream(self, call: ProviderCall) -> AsyncIterator[dict[str, Any] | NativeEvent]:
        translator = self.translator_for(call)
        request = translator.request(call, stream=True)
        async with self._client.open_stream(request, self._timeouts, call.timeout_s) as upstream:
            if upstream.status >= 400:
                body = await upstream.read_body()
                raise translator.error(upstream.status, body, upstream.headers)
            state = translator.stream_events(call)
            while not state.done:
                events = await upstream.next_events()
                if events is None:
                    # Connection ended: the translator decides whether that was
                    # a complete stream or a cut one (it raises if cut).
                    for chunk in state.finish():
                        yield chunk
                    return
                for event in events:
                    for chunk in state.feed(event):
                        yield chunk
                    if state.done:
                        break
            await upstream.drain()
