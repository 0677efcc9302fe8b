"""The Responses door's encoder: session items → Responses frames, with Relay's ids.

A session yields OpenAI chat chunks (every provider reached through the chat form, the test
mode, a cache replay) or, when the route is OpenAI's own Responses endpoint, native events.
Chat chunks become the semantic events (dialects/responses/stream.py); native events keep
their shape and sequence numbers with the ids rewritten (dialects/responses/native.py).  Either
way ``final`` ends up holding the terminal ``response`` object, which the door stores.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson
from google.api import httpbody_pb2

from relay_server.api.door import join_sse
from relay_server.dialects.responses.native import NativeIds
from relay_server.dialects.responses.output import from_chat, response_object
from relay_server.dialects.responses.request import Turn
from relay_server.dialects.responses.stream import ChatToEvents, Event
from relay_server.domain.provider import NativeEvent, NativeResponse
from relay_server.errors import RelayError
from relay_server.pipeline.session import Item

_JSON = "application/json"
_SSE = "text/event-stream"


def json_body(value: Any) -> httpbody_pb2.HttpBody:
    return httpbody_pb2.HttpBody(content_type=_JSON, data=orjson.dumps(value))


def sse(event: Mapping[str, Any]) -> httpbody_pb2.HttpBody:
    data = b"event: " + str(event["type"]).encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"
    return httpbody_pb2.HttpBody(content_type=_SSE, data=data)


def native_payload(raw: bytes) -> dict[str, Any]:
    """The JSON of one re-emitted SSE event (``event: X\\ndata: {...}\\n\\n``)."""
    lines = [line[5:].lstrip() if line.startswith(b"data:") else None for line in raw.split(b"\n")]
    value = orjson.loads(b"\n".join(line for line in lines if line is not None))
    if not isinstance(value, dict):
        raise TypeError("a Responses event is a JSON object")
    return value


class ResponsesSSE:
    """One request's frames (``api/door.py``'s ``Encoder``)."""

    def __init__(self, turn: Turn, response_id: str, *, model: str, created_at: float | None = None) -> None:
        self.turn = turn
        self.response_id = response_id
        self.created_at = created_at if created_at is not None else time.time()
        self.model = model
        self._chat = ChatToEvents(turn, response_id, created_at=self.created_at, model=model)
        self._native = NativeIds(turn, response_id, model=model, created_at=self.created_at)
        self._is_native = False
        self.final: dict[str, Any] | None = None

    def response(self, answer: Mapping[str, Any] | NativeResponse) -> dict[str, Any]:
        """A whole answer (chat completion or native response) as Relay's ``response`` object."""
        if isinstance(answer, NativeResponse):
            return self._native.response(orjson.loads(answer.data))
        return from_chat(self.turn, self.response_id, answer, created_at=self.created_at, model=self.model)

    def body(self, response: Mapping[str, Any] | NativeResponse) -> httpbody_pb2.HttpBody:
        self.final = self.response(response)
        return json_body(self.final)

    def item(self, item: Item) -> list[httpbody_pb2.HttpBody]:
        if isinstance(item, NativeEvent):
            self._is_native = True
            event = self._native.event(native_payload(item.data))
            self.final = self._native.final
            return [sse(event)]
        return [sse(e) for e in self._chat.chunk(item)]

    join = staticmethod(join_sse)

    def end(self) -> list[httpbody_pb2.HttpBody]:
        if self._is_native:
            if self.final is None:  # the provider ended without a terminal event: say so
                return self.failed_events("provider_error", "the upstream provider ended the response early")
            return []
        events = self._chat.end()
        self.final = self._chat.final
        return [sse(e) for e in events]

    def failed(self, err: RelayError) -> list[httpbody_pb2.HttpBody]:
        return self.failed_events(err.code, err.message)

    def failed_events(self, code: str, message: str) -> list[httpbody_pb2.HttpBody]:
        events: list[Event] = [self._native.failed(code, message)] if self._is_native else self._chat.fail(code, message)
        self.final = self._native.final if self._is_native else self._chat.final
        return [sse(e) for e in events]

    def failed_object(self, code: str, message: str) -> dict[str, Any]:
        """A non-streamed (background) response that failed."""
        return response_object(
            self.turn, self.response_id, created_at=self.created_at, model=self.model, status="failed",
            error={"code": code, "message": message},
        )  # fmt: skip
