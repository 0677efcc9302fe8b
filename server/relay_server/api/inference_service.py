"""relay.v1.InferenceService: typed gRPC over the same pipeline as the REST facade.

Typed request → OpenAI JSON (plus ``extra_body``) → pipeline → OpenAI JSON →
typed response.  Errors are real gRPC statuses with an ErrorInfo; a failure
after the first streamed message ends the stream with that status.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from relay_proto.relay.v1 import chat_pb2, completions_pb2, embeddings_pb2, inference_service_pb2_grpc
from relay_server.api import door
from relay_server.api.openai_service import request_metadata
from relay_server.api.openai_wire import validate
from relay_server.domain.provider import RequestKind
from relay_server.domain.request import new_request_id
from relay_server.errors import RelayError
from relay_server.observability.request_context import bind_request
from relay_server.pipeline.inference import InferencePipeline

# int64 fields render as JSON strings in MessageToDict; providers expect numbers.
_INT64_FIELDS = ("seed",)


def to_openai_json(request: Message, *, stream: bool) -> dict[str, Any]:
    body = json_format.MessageToDict(request, preserving_proto_field_name=True)
    extra = body.pop("extra_body", None) or {}
    for name in _INT64_FIELDS:
        if name in body:
            body[name] = int(body[name])
    body.update(extra)
    body["stream"] = stream
    if not stream:
        body.pop("stream_options", None)
    return body


def _typed(payload: dict[str, Any], message_type: type[Message]) -> Message:
    return json_format.ParseDict(payload, message_type(), ignore_unknown_fields=True)


class InferenceServicer(inference_service_pb2_grpc.InferenceServiceServicer):
    def __init__(self, pipeline: InferencePipeline, *, observability: Any = None) -> None:
        self._pipeline = pipeline
        self._observability = observability

    async def CreateChatCompletion(self, request, context):  # noqa: N802 (gRPC naming)
        return await self._unary("chat", request, context, chat_pb2.ChatCompletion)

    async def CreateCompletion(self, request, context):  # noqa: N802
        return await self._unary("completion", request, context, completions_pb2.Completion)

    async def CreateEmbedding(self, request, context):  # noqa: N802
        return await self._unary("embedding", request, context, embeddings_pb2.EmbeddingList)

    async def StreamChatCompletion(self, request, context):  # noqa: N802
        with bind_request(new_request_id(), "chat", self._observability, request_metadata(context)) as scope:
            async for message in self._stream("chat", request, context, chat_pb2.ChatCompletionChunk, scope.request_id):
                yield message

    async def StreamCompletion(self, request, context):  # noqa: N802
        with bind_request(new_request_id(), "completion", self._observability, request_metadata(context)) as scope:
            async for message in self._stream("completion", request, context, completions_pb2.Completion, scope.request_id):
                yield message

    async def _unary(
        self, kind: RequestKind, request: Message, context: grpc.aio.ServicerContext, out: type[Message]
    ) -> Message:
        with bind_request(new_request_id(), kind, self._observability, request_metadata(context)) as scope:
            async for message in self._serve(kind, request, context, out, scope.request_id, stream=False):
                return message
        raise AssertionError("unreachable: a unary answer is one frame or an abort")  # pragma: no cover

    async def _stream(
        self, kind: RequestKind, request: Message, context: grpc.aio.ServicerContext, out: type[Message], request_id: str
    ) -> AsyncIterator[Message]:
        async for message in self._serve(kind, request, context, out, request_id, stream=True):
            yield message

    def _serve(
        self, kind: RequestKind, request: Message, context: grpc.aio.ServicerContext, out: type[Message],
        request_id: str, *, stream: bool,
    ) -> AsyncIterator[Message]:
        def decode() -> tuple[dict[str, Any], None]:
            body = _embedding_json(request) if kind == "embedding" else to_openai_json(request, stream=stream)
            validate(kind, body)
            return body, None

        return door.serve(
            self._pipeline, context, kind=kind, door="openai", decode=decode,
            encoder=lambda admitted: TypedFrames(out), request_id=request_id, metadata=request_metadata(context),
        )


class TypedFrames:
    """The typed gRPC door: OpenAI JSON → the typed message; a failure mid-stream ends the call
    with its status (gRPC has no in-band error frame)."""

    __slots__ = ("_out",)

    def __init__(self, out: type[Message]) -> None:
        self._out = out

    def body(self, response: Any) -> Message:
        return _typed(response, self._out)

    def item(self, item: Any) -> tuple[Message]:
        return (_typed(item, self._out),)

    def end(self) -> tuple[()]:
        return ()

    def failed(self, err: RelayError) -> tuple[()]:
        raise err

    def join(self, frames: list[Message]) -> list[Message]:
        return frames  # typed messages are each a message of their own


def _embedding_json(request: Message) -> dict[str, Any]:
    body = json_format.MessageToDict(request, preserving_proto_field_name=True)
    body.update(body.pop("extra_body", None) or {})
    return body
