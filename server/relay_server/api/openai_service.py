"""relay.v1.OpenAIService: the OpenAI-compatible REST facade (via Envoy).

Proto ↔ pipeline only.  The rules that make the REST surface byte-exact:
- nothing is sent before the first frame is known, so an error before it is a
  trailers-only response that Envoy's Lua filter turns into status + JSON body;
- each SSE frame is one HttpBody message (Envoy flushes each at once), the
  stream ends with ``data: [DONE]``;
- an error after the first frame is an in-band ``data: {"error": ...}`` frame,
  never an abort (which a client would see as a silently truncated stream).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import grpc
import orjson
from google.api import httpbody_pb2

from relay_proto.relay.v1 import models_pb2, openai_service_pb2_grpc
from relay_server.api.error_mapping import abort, as_relay_error, sse_error_frame
from relay_server.api.openai_wire import decode_body, validate
from relay_server.api.response_headers import success_headers
from relay_server.domain.catalog import CatalogEntry
from relay_server.domain.provider import RequestKind
from relay_server.domain.request import new_request_id
from relay_server.errors import RelayError
from relay_server.observability.request_context import bind_request
from relay_server.pipeline.inference import InferencePipeline
from relay_server.pipeline.routing.catalog import Catalog
from relay_server.pipeline.steps.authenticate import Authenticator

_JSON = "application/json"
_SSE = "text/event-stream"
_DONE = httpbody_pb2.HttpBody(content_type=_SSE, data=b"data: [DONE]\n\n")


def request_metadata(context: grpc.aio.ServicerContext) -> dict[str, str]:
    return {key: value for key, value in (context.invocation_metadata() or ()) if isinstance(value, str)}


def _sse(chunk: Mapping[str, Any]) -> httpbody_pb2.HttpBody:
    return httpbody_pb2.HttpBody(content_type=_SSE, data=b"data: " + orjson.dumps(chunk) + b"\n\n")


def _model(entry: CatalogEntry) -> models_pb2.Model:
    return models_pb2.Model(id=entry.relay_name, object="model", created=entry.created, owned_by=entry.owned_by)


class OpenAIServicer(openai_service_pb2_grpc.OpenAIServiceServicer):
    def __init__(
        self, pipeline: InferencePipeline, authenticator: Authenticator, catalog: Catalog, *, observability: Any = None
    ) -> None:
        self._pipeline = pipeline
        self._auth = authenticator
        self._catalog = catalog
        self._observability = observability

    def _bind(self, kind: str, metadata: Mapping[str, str]):  # noqa: ANN202
        """This request's scope: its id on every log line and span (observability.request_context)."""
        return bind_request(new_request_id(), kind, self._observability, metadata)

    async def CreateChatCompletion(self, request, context):  # noqa: N802 (gRPC naming)
        metadata = request_metadata(context)
        with self._bind("chat", metadata) as scope:
            async for frame in self._generate("chat", request, context, scope.request_id, metadata):
                yield frame

    async def CreateCompletion(self, request, context):  # noqa: N802
        metadata = request_metadata(context)
        with self._bind("completion", metadata) as scope:
            async for frame in self._generate("completion", request, context, scope.request_id, metadata):
                yield frame

    async def CreateEmbedding(self, request, context):  # noqa: N802
        metadata = request_metadata(context)
        with self._bind("embedding", metadata) as scope:
            request_id = scope.request_id
            try:
                body = decode_body(request.data)
                validate("embedding", body)
                admitted = await self._pipeline.admit("embedding", body, metadata, request_id)
                response = await self._pipeline.complete(admitted)
            except Exception as exc:  # noqa: BLE001 (every failure becomes an OpenAI-shaped error)
                await abort(context, as_relay_error(exc), request_id)
            await context.send_initial_metadata(
                success_headers(request_id, admitted)
            )
            return httpbody_pb2.HttpBody(content_type=_JSON, data=orjson.dumps(response))

    async def ListModels(self, request, context):  # noqa: N802
        metadata = request_metadata(context)
        with self._bind("models", metadata) as scope:
            try:
                principal = await self._auth.authenticate(metadata)
            except Exception as exc:  # noqa: BLE001
                await abort(context, as_relay_error(exc), scope.request_id)
            await context.send_initial_metadata((("x-request-id", scope.request_id),))
            return models_pb2.ListModelsResponse(
                object="list", data=[_model(e) for e in self._catalog.visible_to(principal)]
            )

    async def GetModel(self, request, context):  # noqa: N802
        metadata = request_metadata(context)
        with self._bind("models", metadata) as scope:
            try:
                principal = await self._auth.authenticate(metadata)
                entry = self._catalog.resolve(request.model, principal)
            except Exception as exc:  # noqa: BLE001
                await abort(context, as_relay_error(exc), scope.request_id)
            await context.send_initial_metadata((("x-request-id", scope.request_id),))
            return _model(entry)

    async def _generate(
        self, kind: RequestKind, request: httpbody_pb2.HttpBody, context: grpc.aio.ServicerContext, request_id: str,
        metadata: Mapping[str, str],
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        chunks: AsyncIterator[dict[str, Any]] | None = None
        try:
            body = decode_body(request.data)
            validate(kind, body)
            admitted = await self._pipeline.admit(kind, body, metadata, request_id)
            if not admitted.ctx.stream:
                response = await self._pipeline.complete(admitted)
                first = None
            else:
                chunks = self._pipeline.stream(admitted)
                # Wait for the provider's first chunk before sending anything: until then
                # every failure can still be a proper HTTP status.
                first = await anext(chunks, None)
            headers = success_headers(request_id, admitted)
        except Exception as exc:  # noqa: BLE001
            if chunks is not None:
                await chunks.aclose()
            await abort(context, as_relay_error(exc), request_id)

        await context.send_initial_metadata(headers)
        if chunks is None:
            yield httpbody_pb2.HttpBody(content_type=_JSON, data=orjson.dumps(response))
            return
        try:
            if first is not None:
                yield _sse(first)
                async for chunk in chunks:
                    yield _sse(chunk)
            yield _DONE
        except RelayError as err:
            yield httpbody_pb2.HttpBody(content_type=_SSE, data=sse_error_frame(err))
        except Exception as exc:  # noqa: BLE001
            yield httpbody_pb2.HttpBody(content_type=_SSE, data=sse_error_frame(as_relay_error(exc)))
        finally:
            # Closing the pipeline's generator closes the upstream call and meters what was generated,
            # also when the client went away (CancelledError at a yield above).
            await chunks.aclose()
