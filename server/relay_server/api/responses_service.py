"""relay.v1.ResponsesService: the OpenAI Responses door (``/v1/responses``).

``CreateResponse`` validates the body, rebuilds the conversation when it continues a stored
response (``previous_response_id``, responses/service.py), and serves the turn through the one
serving loop every door uses (api/door.py): the pipeline sees the chat form, a provider that
serves the Responses API natively receives the native body.  The terminal ``response`` is
stored (unless ``store: false``) before the client sees it, so a client that reads it back or
continues it right after the last event finds it.  ``background: true`` admits the request
(limits, spend cap, model: refusals are still proper statuses), answers ``queued`` at once and
runs the turn as a task.  Errors are OpenAI-shaped (the closed table of errors.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

import grpc
from google.api import httpbody_pb2

from relay_proto.relay.v1 import responses_pb2_grpc
from relay_server.api import door
from relay_server.api.error_mapping import abort, as_relay_error
from relay_server.api.openai_service import request_metadata
from relay_server.api.openai_wire import decode_body
from relay_server.api.response_headers import success_headers
from relay_server.api.responses_frames import ResponsesSSE, json_body
from relay_server.dialects.responses.output import response_object
from relay_server.dialects.responses.request import (
    Turn,
    native_body,
    parse_turn,
    to_chat,
    truncate,
)
from relay_server.domain.request import Principal, new_request_id
from relay_server.ids import new_id
from relay_server.observability.request_context import bind_request
from relay_server.pipeline.inference import Admitted, InferencePipeline
from relay_server.pipeline.routing.model_names import ModelNames
from relay_server.pipeline.steps.authenticate import Authenticator
from relay_server.pipeline.steps.usage_estimate import estimate_input_tokens
from relay_server.responses.service import ResponseStore

log = logging.getLogger(__name__)

DOOR = "responses"


class ResponsesServicer(responses_pb2_grpc.ResponsesServiceServicer):
    def __init__(
        self, pipeline: InferencePipeline, authenticator: Authenticator, catalog: ModelNames, store: ResponseStore,
        *, observability: Any = None,
    ) -> None:  # fmt: skip
        self._pipeline = pipeline
        self._auth = authenticator
        self._catalog = catalog
        self._store = store
        self._observability = observability

    async def CreateResponse(self, request, context):
        metadata = request_metadata(context)
        with bind_request(new_request_id(), "chat", self._observability, metadata) as scope:
            request_id = scope.request_id
            try:
                turn = parse_turn(decode_body(request.data))
                principal = await self._auth.authenticate(metadata)
                stored = await self._store.history(principal, turn.previous_response_id) if turn.previous_response_id else []
                history = truncate(turn, stored, self._fits(turn, principal))
                chat, native = to_chat(turn, history), native_body(turn, history)
            except Exception as exc:  # noqa: BLE001 (every failure becomes an OpenAI-shaped error)
                await abort(context, as_relay_error(exc), request_id)
            if turn.background:
                frames = self._background(context, turn, principal, chat, native, metadata, request_id)
            else:
                frames = self._serve(context, turn, principal, chat, native, metadata, request_id)
            async for frame in frames:
                yield frame

    def _fits(self, turn: Turn, principal: Principal) -> Any:
        """Whether a chat form leaves room for the answer in the model's context (truncation: auto)."""

        def fits(chat: dict[str, Any]) -> bool:
            entry = self._catalog.resolve(turn.model, principal, "chat")
            room = entry.context_window - int(turn.body.get("max_output_tokens") or entry.max_output_tokens or 0)
            return estimate_input_tokens("chat", chat, entry.relay_name) <= room

        return fits

    async def _serve(
        self, context: grpc.aio.ServicerContext, turn: Turn, principal: Principal, chat: dict[str, Any],
        native: dict[str, Any], metadata: Mapping[str, str], request_id: str,
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:  # fmt: skip
        encoders: list[ResponsesSSE] = []

        def encoder(admitted: Admitted) -> ResponsesSSE:
            encoders.append(ResponsesSSE(turn, new_id("resp"), model=admitted.entry.relay_name))
            return encoders[0]

        stored = False
        frames = door.serve(
            self._pipeline, context, kind="chat", door=DOOR, decode=lambda: (chat, native),
            encoder=encoder, request_id=request_id, metadata=metadata,
        )  # fmt: skip
        async for frame in frames:
            final = encoders[0].final if encoders else None
            if final is not None and not stored:
                stored = True  # before the terminal frame leaves: a read right after it finds the response
                await self._save(principal, turn, final, request_id)
            yield frame

    async def _save(self, principal: Principal, turn: Turn, body: Mapping[str, Any], request_id: str) -> None:
        try:
            await self._store.save(principal, turn, body, request_id=request_id)
        except Exception:  # the answer is already on its way; losing the record must not cut it
            log.exception("storing a response failed", extra={"response_id": body.get("id")})

    async def _background(
        self, context: grpc.aio.ServicerContext, turn: Turn, principal: Principal, chat: dict[str, Any],
        native: dict[str, Any], metadata: Mapping[str, str], request_id: str,
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:  # fmt: skip
        try:
            admitted = await self._pipeline.admit("chat", chat, metadata, request_id, door=DOOR, native_body=native)
        except Exception as exc:  # noqa: BLE001
            await abort(context, as_relay_error(exc), request_id)
        frames = ResponsesSSE(turn, new_id("resp"), model=admitted.entry.relay_name)
        queued = response_object(turn, frames.response_id, created_at=frames.created_at, model=frames.model, status="queued")
        try:
            await self._store.save(principal, turn, queued, request_id=request_id)
        except Exception as exc:  # noqa: BLE001 (nothing ran: release the reservation, answer the error)
            await self._pipeline.session(admitted).aclose()
            await abort(context, as_relay_error(exc), request_id)
        self._store.run_background(frames.response_id, self._run(admitted, frames, principal, request_id))
        await context.send_initial_metadata(success_headers(request_id, admitted))
        yield json_body(queued)

    async def _run(self, admitted: Admitted, frames: ResponsesSSE, principal: Principal, request_id: str) -> None:
        session = self._pipeline.session(admitted)
        try:
            try:
                await self._store.start_background(principal, frames.response_id)  # GET shows in_progress
            except Exception:  # cosmetic: the run and its outcome do not depend on it
                log.warning("marking a background response in progress failed", exc_info=True)
            final = frames.response(await session.complete())
        except asyncio.CancelledError:
            # Cancelled (POST …/cancel, deletion, shutdown): the session bills what ran — and, when the
            # cancel came before the provider call, still meters the request and releases its reservation.
            await session.aclose()
            raise
        except Exception as exc:  # noqa: BLE001
            err = as_relay_error(exc)
            final = frames.failed_object(err.code, err.message)
        try:
            await self._store.finish_background(principal, final, request_id=request_id)
        except Exception:
            log.exception("storing a background response failed", extra={"response_id": frames.response_id})

    # -- stored responses --------------------------------------------------------------------

    async def _call(self, context: grpc.aio.ServicerContext, work: Any) -> httpbody_pb2.HttpBody:
        request_id = new_request_id()
        try:
            principal = await self._auth.authenticate(request_metadata(context))
            result = await work(principal)
        except Exception as exc:  # noqa: BLE001
            await abort(context, as_relay_error(exc), request_id)
        await context.send_initial_metadata((("x-request-id", request_id),))
        return json_body(result)

    async def GetResponse(self, request, context):
        return await self._call(context, lambda p: self._store.get(p, request.response_id))

    async def DeleteResponse(self, request, context):
        return await self._call(context, lambda p: self._store.delete(p, request.response_id))

    async def CancelResponse(self, request, context):
        return await self._call(context, lambda p: self._store.cancel(p, request.response_id))

    async def ListInputItems(self, request, context):
        return await self._call(
            context,
            lambda p: self._store.input_items(p, request.response_id, after=request.after, limit=request.limit, order=request.order),
        )

