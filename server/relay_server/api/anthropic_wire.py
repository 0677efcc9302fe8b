"""The Anthropic door's frames (``Encoder`` for ``api/door.py``) and its list shapes.

A Claude model on the Anthropic provider answers in this dialect already: its events and
its body pass through as received.  Every other answer is an OpenAI one (chunks or a chat
completion, also a response-cache replay) and is translated by the ``anthropic_openai``
package.  Errors after the first event are an ``event: error`` frame in Anthropic's shape.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from google.api import httpbody_pb2

from relay_server.api.door import join_sse
from relay_server.api.error_mapping import anthropic_error_event
from relay_server.domain.catalog import CatalogEntry
from relay_server.domain.provider import NativeEvent, NativeResponse
from relay_server.errors import RelayError
from relay_server.pipeline.inference import Admitted
from relay_server.pipeline.session import Item
from relay_server.providers.anthropic_openai.responses import (
    anthropic_message,
    message_id,
)
from relay_server.providers.anthropic_openai.to_anthropic_events import AnthropicEvents

JSON = "application/json"
SSE = "text/event-stream"


def _sse(data: bytes) -> httpbody_pb2.HttpBody:
    return httpbody_pb2.HttpBody(content_type=SSE, data=data)


class AnthropicSSE:
    """One request's Anthropic frames: native events as received, OpenAI chunks translated."""

    __slots__ = ("_admitted", "_events", "_native")

    def __init__(self, admitted: Admitted) -> None:
        self._admitted = admitted
        ctx = admitted.ctx
        self._events = AnthropicEvents(message_id(ctx.request_id), ctx.model_name, admitted.input_tokens)
        self._native = False

    def body(self, response: Mapping[str, Any] | NativeResponse) -> httpbody_pb2.HttpBody:
        if isinstance(response, NativeResponse):
            return httpbody_pb2.HttpBody(content_type=JSON, data=response.data)
        message = anthropic_message(
            response, message_id=message_id(self._admitted.ctx.request_id), estimated_input=self._admitted.input_tokens
        )
        return httpbody_pb2.HttpBody(content_type=JSON, data=orjson.dumps(message))

    def item(self, item: Item) -> list[httpbody_pb2.HttpBody]:
        if isinstance(item, NativeEvent):
            self._native = True
            return [_sse(item.data)]
        return [_sse(frame) for frame in self._events.chunk(item)]

    def end(self) -> Iterable[httpbody_pb2.HttpBody]:
        if self._native:
            return ()  # the provider's own message_stop went through already
        return [_sse(frame) for frame in self._events.end()]

    def join(self, frames: list[httpbody_pb2.HttpBody]) -> list[httpbody_pb2.HttpBody]:
        return join_sse(frames)

    def failed(self, err: RelayError) -> Iterable[httpbody_pb2.HttpBody]:
        return (_sse(anthropic_error_event(err)),)


def model_info(entry: CatalogEntry) -> dict[str, Any]:
    """One model as Anthropic describes it."""
    created = datetime.fromtimestamp(entry.created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"type": "model", "id": entry.relay_name, "display_name": entry.relay_name, "created_at": created}


def model_list(entries: Iterable[CatalogEntry], limit: int = 0, after_id: str = "", before_id: str = "") -> bytes:
    """Anthropic's ``GET /v1/models`` page: newest first, ``has_more`` / ``first_id`` / ``last_id``."""
    models = sorted(entries, key=lambda e: (-e.created, e.relay_name))
    ids = [e.relay_name for e in models]
    if after_id in ids:
        models = models[ids.index(after_id) + 1 :]
    elif before_id in ids:
        models = models[: ids.index(before_id)]
    limit = limit if 0 < limit <= 1000 else 20
    page, has_more = models[:limit], len(models) > limit
    data = [model_info(e) for e in page]
    return orjson.dumps({
        "data": data, "has_more": has_more,
        "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None,
    })
