"""relay.v1.ThreadService: proto ↔ ``relay_server.threads`` only.

The two streaming RPCs follow the REST facade's rules (api/openai_service.py):
nothing is sent before the first frame is known, so a failure up to then is a
proper HTTP status; each SSE frame is one HttpBody; a failure after the first
frame is an in-band ``data: {"error": ...}`` frame, never an abort.  A client
that disconnects only stops its own stream: the reply keeps being produced
and persisted, and can be resumed with StreamMessage.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

import grpc
import orjson
from google.api import httpbody_pb2
from google.protobuf import json_format
from google.protobuf.message import Message

from relay_proto.relay.v1 import threads_pb2, threads_pb2_grpc
from relay_server.api.error_mapping import abort, as_relay_error, sse_error_frame
from relay_server.api.openai_service import request_metadata
from relay_server.domain.request import new_request_id
from relay_server.errors import ErrorKind, RelayError
from relay_server.observability.request_context import bind_request
from relay_server.threads.render import message_proto, thread_proto
from relay_server.threads.service import SendInput, Threads

IDEMPOTENCY_HEADER = "idempotency-key"
_JSON = "application/json"
_SSE = "text/event-stream"


def _plain(value: Any) -> Any:
    """Struct/Value → JSON, with whole numbers as ints (protobuf carries every number as a double)."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _json(message: Message) -> Any:
    return _plain(json_format.MessageToDict(message, preserving_proto_field_name=True))


def _send_input(request: threads_pb2.SendMessageRequest, idempotency_key: str) -> SendInput:
    return SendInput(
        thread_id=request.thread_id,
        content=[_json(block) for block in request.content],
        model=request.model,
        role=request.role or "user",
        stream=request.stream,
        instructions=request.instructions,
        tools=[_json(tool) for tool in request.tools],
        tool_choice=_json(request.tool_choice) if request.HasField("tool_choice") else None,
        temperature=request.temperature if request.HasField("temperature") else None,
        max_tokens=request.max_tokens if request.HasField("max_tokens") else None,
        max_history_messages=request.max_history_messages,
        extra_body=_json(request.extra_body) if request.HasField("extra_body") else {},
        idempotency_key=idempotency_key,
    )


def _sse(data: bytes) -> httpbody_pb2.HttpBody:
    return httpbody_pb2.HttpBody(content_type=_SSE, data=data)


class ThreadServicer(threads_pb2_grpc.ThreadServiceServicer):
    def __init__(self, threads: Threads) -> None:
        self._threads = threads

    async def CreateThread(self, request, context):  # noqa: N802 (gRPC naming)
        request_id = new_request_id()
        try:
            metadata = request_metadata(context)
            principal = await self._threads.caller(metadata)
            thread = await self._threads.create_thread(
                principal,
                end_user_id=request.end_user_id,
                title=request.title,
                metadata=_json(request.metadata) if request.HasField("metadata") else None,
                idempotency_key=metadata.get(IDEMPOTENCY_HEADER) or request.request_id,
            )
        except Exception as exc:  # noqa: BLE001 (every failure becomes an OpenAI-shaped error)
            await abort(context, as_relay_error(exc), request_id)
        await context.send_initial_metadata((("x-request-id", request_id),))
        return thread_proto(thread)

    async def GetThread(self, request, context):  # noqa: N802
        request_id = new_request_id()
        try:
            principal = await self._threads.caller(request_metadata(context))
            thread = await self._threads.get_thread(principal, request.thread_id)
        except Exception as exc:  # noqa: BLE001
            await abort(context, as_relay_error(exc), request_id)
        await context.send_initial_metadata((("x-request-id", request_id),))
        return thread_proto(thread)

    async def ListThreads(self, request, context):  # noqa: N802
        request_id = new_request_id()
        try:
            principal = await self._threads.caller(request_metadata(context))
            page, next_cursor = await self._threads.list_threads(
                principal, end_user_id=request.end_user_id, limit=request.limit, cursor=request.cursor
            )
        except Exception as exc:  # noqa: BLE001
            await abort(context, as_relay_error(exc), request_id)
        await context.send_initial_metadata((("x-request-id", request_id),))
        return threads_pb2.ListThreadsResponse(
            object="list", data=[thread_proto(t) for t in page], next_cursor=next_cursor, has_more=bool(next_cursor)
        )

    async def DeleteThread(self, request, context):  # noqa: N802
        request_id = new_request_id()
        try:
            principal = await self._threads.caller(request_metadata(context))
            await self._threads.delete_thread(principal, request.thread_id)
        except Exception as exc:  # noqa: BLE001
            await abort(context, as_relay_error(exc), request_id)
        await context.send_initial_metadata((("x-request-id", request_id),))
        return threads_pb2.DeleteThreadResponse(id=request.thread_id, object="thread.deleted", deleted=True)

    async def SendMessage(self, request, context):  # noqa: N802
        # The reply runs in a background task that inherits this scope, so its log lines
        # (and those of its provider attempts) carry the request id, tenant and model too.
        with bind_request(new_request_id(), "chat", None, request_metadata(context)) as scope:
            request_id = scope.request_id
            frames: AsyncIterator[bytes] | None = None
            first: bytes | None = None
            try:
                metadata = request_metadata(context)
                principal = await self._threads.caller(metadata)
                send = _send_input(request, metadata.get(IDEMPOTENCY_HEADER, ""))
                sent = await self._threads.send(principal, metadata, send, request_id)
                if not request.stream:
                    sent = await self._threads.wait(principal, sent)
                    body = orjson.dumps({
                        "user_message": await self._threads.message_json(sent.user_message),
                        "assistant_message": await self._threads.message_json(sent.reply),
                    })
                else:
                    frames = self._threads.stream(principal, sent.reply.thread_id, sent.reply.id, 0)
                    first = await anext(frames, None)
            except Exception as exc:  # noqa: BLE001
                if frames is not None:
                    await frames.aclose()  # type: ignore[attr-defined]
                await abort(context, as_relay_error(exc), request_id)
            headers = (
                ("x-request-id", sent.reply.request_id or request_id),
                ("x-relay-thread-message-id", sent.reply.id),
                ("x-relay-idempotent-replay", "true" if sent.run is None else "false"),
            )
            await context.send_initial_metadata(headers)
            if frames is None:
                yield httpbody_pb2.HttpBody(content_type=_JSON, data=body)
                return
            async for frame in self._relay(frames, first):
                yield frame

    async def StreamMessage(self, request, context):  # noqa: N802
        request_id = new_request_id()
        frames: AsyncIterator[bytes] | None = None
        try:
            principal = await self._threads.caller(request_metadata(context))
            frames = self._threads.stream(principal, request.thread_id, request.message_id, request.starting_after)
            first = await anext(frames, None)
        except Exception as exc:  # noqa: BLE001
            if frames is not None:
                await frames.aclose()  # type: ignore[attr-defined]
            await abort(context, as_relay_error(exc), request_id)
        await context.send_initial_metadata((("x-request-id", request_id),))
        async for frame in self._relay(frames, first):
            yield frame

    async def _relay(self, frames: AsyncIterator[bytes], first: bytes | None) -> AsyncIterator[httpbody_pb2.HttpBody]:
        try:
            if first is not None:
                yield _sse(first)
                async for frame in frames:
                    yield _sse(frame)
        except Exception as exc:  # noqa: BLE001
            yield _sse(sse_error_frame(as_relay_error(exc)))
        finally:
            await frames.aclose()  # type: ignore[attr-defined]

    async def ListMessages(self, request, context):  # noqa: N802
        request_id = new_request_id()
        try:
            principal = await self._threads.caller(request_metadata(context))
            page, next_cursor = await self._threads.list_messages(
                principal, request.thread_id, limit=request.limit, cursor=request.cursor, order=request.order,
                include_tools=request.include_tool_messages,
            )
        except Exception as exc:  # noqa: BLE001
            await abort(context, as_relay_error(exc), request_id)
        await context.send_initial_metadata((("x-request-id", request_id),))
        return threads_pb2.ListMessagesResponse(
            object="list", data=[message_proto(m) for m in page], next_cursor=next_cursor, has_more=bool(next_cursor)
        )

    async def GetMessage(self, request, context):  # noqa: N802
        request_id = new_request_id()
        try:
            principal = await self._threads.caller(request_metadata(context))
            message = await self._threads.get_message(
                principal, request.thread_id, request.message_id, request.include_tool_messages
            )
        except Exception as exc:  # noqa: BLE001
            await abort(context, as_relay_error(exc), request_id)
        await context.send_initial_metadata((("x-request-id", request_id),))
        return message_proto(message)

    async def SearchMessages(self, request, context):  # noqa: N802
        request_id = new_request_id()
        try:
            metadata = request_metadata(context)
            principal = await self._threads.caller(metadata)
            found, method = await self._threads.search(
                principal, metadata, query=request.query, end_user_id=request.end_user_id, limit=request.limit
            )
        except Exception as exc:  # noqa: BLE001
            await abort(context, as_relay_error(exc), request_id)
        await context.send_initial_metadata((("x-request-id", request_id),))
        return threads_pb2.SearchMessagesResponse(
            object="list",
            data=[threads_pb2.SearchResult(message=message_proto(m), score=score) for m, score in found],
            method=method,
        )


_NEEDS_REDIS = RelayError(
    ErrorKind.FAILED_PRECONDITION,
    "The Threads API needs Redis (for resumable streams) and this server runs without it: set REDIS_URL.",
)


class _ThreadsWithoutRedis(threads_pb2_grpc.ThreadServiceServicer):
    """Every method answers FAILED_PRECONDITION (409) with the reason, never UNIMPLEMENTED:
    the API exists, this deployment lacks what it needs."""


def _refuse(name: str, streaming: bool):  # noqa: ANN202
    async def unary(self, request, context):  # noqa: ANN001, ARG001
        await abort(context, _NEEDS_REDIS, new_request_id())

    async def stream(self, request, context):  # noqa: ANN001, ARG001
        await abort(context, _NEEDS_REDIS, new_request_id())
        yield  # pragma: no cover (an async generator, as the streaming handler must be)

    handler = stream if streaming else unary
    handler.__name__ = name
    return handler


for _method in threads_pb2.DESCRIPTOR.services_by_name["ThreadService"].methods:
    setattr(_ThreadsWithoutRedis, _method.name, _refuse(_method.name, _method.server_streaming))


def register_thread_service(server: grpc.aio.Server, threads: Threads | None) -> str:
    """Add the servicer (FAILED_PRECONDITION without Redis, which threads need); returns the service name."""
    servicer = ThreadServicer(threads) if threads is not None else _ThreadsWithoutRedis()
    threads_pb2_grpc.add_ThreadServiceServicer_to_server(servicer, server)
    return threads_pb2.DESCRIPTOR.services_by_name["ThreadService"].full_name
