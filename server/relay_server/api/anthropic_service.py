"""relay.v1.AnthropicService: the Anthropic Messages REST door (via Envoy).

``POST /v1/messages`` runs through the same pipeline as chat (authentication, limits, spend
reservation from ``max_tokens``, cache, routing and failover, metering, request log with
``door = anthropic``): the body is decoded into its OpenAI form for the pipeline and kept as
is for a provider that speaks Anthropic natively (``providers/anthropic_native.py``).
Errors are Anthropic-shaped (``errors.ANTHROPIC_ERRORS``), before the first event through
Envoy's Lua filter, after it as an ``event: error`` frame.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from google.api import httpbody_pb2

from relay_proto.relay.v1 import anthropic_service_pb2_grpc
from relay_server.api import door
from relay_server.api.anthropic_wire import JSON, AnthropicSSE, model_info, model_list
from relay_server.api.error_mapping import abort, anthropic_shape, as_relay_error
from relay_server.api.openai_service import request_metadata
from relay_server.api.openai_wire import decode_body
from relay_server.domain.request import new_request_id
from relay_server.observability.request_context import bind_request
from relay_server.pipeline.inference import InferencePipeline
from relay_server.pipeline.routing.model_names import ModelNames
from relay_server.pipeline.steps.authenticate import Authenticator
from relay_server.providers.anthropic_openai.to_openai_request import openai_request

TOKEN_COUNT_HEADER = "x-relay-token-count"


def decode(raw: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the OpenAI form for the pipeline, the client's own body for a native provider)."""
    native = decode_body(raw)
    return openai_request(native), native


class AnthropicServicer(anthropic_service_pb2_grpc.AnthropicServiceServicer):
    def __init__(
        self, pipeline: InferencePipeline, authenticator: Authenticator, catalog: ModelNames, *, observability: Any = None
    ) -> None:
        self._pipeline = pipeline
        self._auth = authenticator
        self._catalog = catalog
        self._observability = observability

    def _bind(self, kind: str, metadata: Mapping[str, str]):
        return bind_request(new_request_id(), kind, self._observability, metadata)

    async def CreateMessage(self, request, context):
        metadata = request_metadata(context)
        with self._bind("chat", metadata) as scope:
            frames = door.serve(
                self._pipeline, context, kind="chat", door="anthropic", decode=lambda: decode(request.data),
                encoder=AnthropicSSE, request_id=scope.request_id, metadata=metadata, shape=anthropic_shape,
            )
            async for frame in frames:
                yield frame

    async def CountTokens(self, request, context):
        """The input tokens of a Messages request: Anthropic's exact count for a Claude model Relay
        holds a key for, Relay's estimate otherwise (``x-relay-token-count: exact | estimated``)."""
        metadata = request_metadata(context)
        with self._bind("chat", metadata) as scope:
            try:
                native = decode_body(request.data)
                # count_tokens takes a Messages body without max_tokens.
                body = openai_request({**native, "max_tokens": 1, "stream": False})
                count = await self._pipeline.count_tokens(
                    body, metadata, scope.request_id, door="anthropic", native_body=native
                )
            except Exception as exc:  # noqa: BLE001 (every failure becomes an Anthropic-shaped error)
                await abort(context, as_relay_error(exc), scope.request_id, anthropic_shape)
            how = "exact" if count.exact else "estimated"
            await context.send_initial_metadata((("x-request-id", scope.request_id), (TOKEN_COUNT_HEADER, how)))
            return httpbody_pb2.HttpBody(content_type=JSON, data=orjson.dumps({"input_tokens": count.input_tokens}))

    async def ListModels(self, request, context):
        metadata = request_metadata(context)
        with self._bind("models", metadata) as scope:
            try:
                principal = await self._auth.authenticate(metadata)
            except Exception as exc:  # noqa: BLE001
                await abort(context, as_relay_error(exc), scope.request_id, anthropic_shape)
            await context.send_initial_metadata((("x-request-id", scope.request_id),))
            data = model_list(self._catalog.visible_to(principal), request.limit, request.after_id, request.before_id)
            return httpbody_pb2.HttpBody(content_type=JSON, data=data)

    async def GetModel(self, request, context):  # noqa: N802
        metadata = request_metadata(context)
        with self._bind("models", metadata) as scope:
            try:
                principal = await self._auth.authenticate(metadata)
                entry = self._catalog.resolve(request.model_id, principal)
            except Exception as exc:  # noqa: BLE001
                await abort(context, as_relay_error(exc), scope.request_id, anthropic_shape)
            await context.send_initial_metadata((("x-request-id", scope.request_id),))
            return httpbody_pb2.HttpBody(content_type=JSON, data=orjson.dumps(model_info(entry)))
