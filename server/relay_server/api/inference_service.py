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
from relay_server.api.error_mapping import abort, as_relay_error
from relay_server.api.openai_service import request_metadata
from relay_server.api.openai_wire import validate
from relay_server.api.response_headers import success_headers
from relay_server.domain.provider import RequestKind
from relay_server.domain.request import new_request_id
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
            request_id = scope.request_id
            try:
                body = to_openai_json(request, stream=False) if kind != "embedding" else _embedding_json(request)
                validate(kind, body)
                admitted = await self._pipeline.admit(kind, body, request_metadata(context), request_id)
                response = await self._pipeline.complete(admitted)
                headers = success_headers(request_id, admitted)
            except Exception as exc:  # noqa: BLE001
                await abort(context, as_relay_error(exc), request_id)
            await context.send_initial_metadata(headers)
            return _typed(response, out)

    async def _stream(
        self, kind: RequestKind, request: Message, context: grpc.aio.ServicerContext, out: type[Message], request_id: str
    ) -> AsyncIterator[Message]:
        chunks = None
        try:
            body = to_openai_json(request, stream=True)
            validate(kind, body)
            admitted = await self._pipeline.admit(kind, body, request_metadata(context), request_id)
            chunks = self._pipeline.stream(admitted)
            first = await anext(chunks, None)
            headers = success_headers(request_id, admitted)
        except Exception as exc:  # noqa: BLE001
            if chunks is not None:
                await chunks.aclose()
            await abort(context, as_relay_error(exc), request_id)
        await context.send_initial_metadata(headers)
        try:
            if first is not None:
                yield _typed(first, out)
                async for chunk in chunks:
                    yield _typed(chunk, out)
        except Exception as exc:  # noqa: BLE001
            await abort(context, as_relay_error(exc), request_id)
        finally:
            await chunks.aclose()


def _embedding_json(request: Message) -> dict[str, Any]:
    body = json_format.MessageToDict(request, preserving_proto_field_name=True)
    body.update(body.pop("extra_body", None) or {})
    return body
