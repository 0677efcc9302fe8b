"""How every door serves an inference request: one loop, door-specific only in its encoder.

A *door* is one public API dialect (OpenAI REST, typed gRPC, Anthropic Messages, OpenAI
Responses).  Each contributes a request decoder (its servicer), an ``Encoder`` that turns
the stream session's items into its frames, and its error shape; this module owns the
rules every door shares:

- nothing is sent before the first frame is known, so an error before it is a
  trailers-only response: a real gRPC status, and through Envoy's Lua filter the exact
  HTTP status and the door's error body;
- the headers (``x-request-id``, ``x-ratelimit-*``, cache, overhead) go out with the first
  frame;
- an error after the first frame is the door's in-band error frame (or, for gRPC, the
  stream's status), never a silent truncation;
- the session is closed on every path, which closes the provider call and meters the
  request — also when the client goes away (``CancelledError`` at a ``yield``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any, Protocol, TypeVar

import grpc
from google.api import httpbody_pb2

from relay_server.api.error_mapping import ErrorShape, abort, as_relay_error
from relay_server.api.response_headers import success_headers
from relay_server.domain.provider import NativeResponse, RequestKind
from relay_server.errors import RelayError
from relay_server.pipeline.inference import Admitted, InferencePipeline
from relay_server.pipeline.session import Item

Frame = TypeVar("Frame")


class Encoder(Protocol[Frame]):
    """One request's frames in one door's dialect (stateful: built per request)."""

    def body(self, response: dict[str, Any] | NativeResponse) -> Frame:
        """The whole answer of a non-streamed request."""
        ...

    def item(self, item: Item) -> Iterable[Frame]:
        """The frames for one session item (often one, sometimes none or several)."""
        ...

    def end(self) -> Iterable[Frame]:
        """The frames that close a stream that reached its end (``[DONE]``, ``message_stop``...)."""
        ...

    def failed(self, err: RelayError) -> Iterable[Frame]:
        """The in-band error after the first frame.  Raising instead ends the call with the
        error's status (what typed gRPC does)."""
        ...

    def join(self, frames: list[Frame]) -> list[Frame]:
        """Frames ready at the same moment, as the door sends them: one message where its wire
        allows (SSE bytes concatenate), else unchanged."""
        ...


def join_sse(frames: list[httpbody_pb2.HttpBody]) -> list[httpbody_pb2.HttpBody]:
    """SSE frames ready together as one ``HttpBody`` (the ``join`` of every SSE door)."""
    if len(frames) < 2:
        return frames
    return [httpbody_pb2.HttpBody(content_type=frames[0].content_type, data=b"".join(f.data for f in frames))]


Decode = Callable[[], tuple[dict[str, Any], Mapping[str, Any] | None]]
"""Parses and validates the request: (OpenAI-form body, the door's native body or None)."""


async def serve(
    pipeline: InferencePipeline,
    context: grpc.aio.ServicerContext,
    *,
    kind: RequestKind,
    door: str,
    decode: Decode,
    encoder: Callable[[Admitted], Encoder[Frame]],
    request_id: str,
    metadata: Mapping[str, str],
    shape: ErrorShape | None = None,
) -> AsyncIterator[Frame]:
    """Serve one request through ``pipeline`` as a stream of ``door`` frames."""
    session = None
    try:
        body, native = decode()
        admitted = await pipeline.admit(kind, body, metadata, request_id, door=door, native_body=native)
        frames = encoder(admitted)
        if admitted.ctx.stream:
            session = pipeline.session(admitted)
            # Wait for the provider's first item before sending anything: until then
            # every failure can still be a proper status.
            first = await anext(session, None)
        else:
            whole = frames.body(await pipeline.complete(admitted))
        headers = success_headers(request_id, admitted)
    except Exception as exc:  # noqa: BLE001 (every failure becomes the door's error)
        if session is not None:
            await session.aclose()
        await abort(context, as_relay_error(exc), request_id, shape)

    await context.send_initial_metadata(headers)
    if session is None:
        yield whole
        return
    try:
        # What one upstream read brought leaves as one message (and the stream's end with the
        # last of it): each gRPC message and Envoy write costs more CPU than the bytes in it.
        # The client's bytes are the same.
        ended = first is None
        out = [] if first is None else list(frames.item(first))
        while True:
            while not ended and session.buffered:
                ready = await anext(session, None)
                if ready is None:
                    ended = True
                else:
                    out.extend(frames.item(ready))
            if ended:
                out.extend(frames.end())
            for frame in frames.join(out):
                yield frame
            if ended:
                break
            following = await anext(session, None)
            ended = following is None
            out = [] if following is None else list(frames.item(following))
    except Exception as exc:  # noqa: BLE001
        err = as_relay_error(exc)
        try:
            failed = list(frames.failed(err))
        except RelayError:
            await abort(context, err, request_id, shape)
        for frame in failed:
            yield frame
    finally:
        await session.aclose()
