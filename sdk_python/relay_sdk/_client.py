"""The two clients: :class:`Relay` (blocking) and :class:`AsyncRelay` (``grpc.aio``).

Each owns one channel and exposes one attribute per service of the protos
(``client.inference``, ``client.api_keys``, …; see ``_gen/methods.py``)
plus the everyday helpers ``chat``, ``chat_stream`` and ``embed``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

import grpc
import grpc.aio
from google.protobuf import json_format, struct_pb2

from relay_proto.relay.v1 import chat_pb2, embeddings_pb2
from relay_sdk._gen.methods import AsyncServices, SyncServices
from relay_sdk._retry import RetryPolicy
from relay_sdk._wrappers import (
    AsyncInvoker,
    AsyncResponseStream,
    Credentials,
    Metadata,
    ResponseStream,
    SyncInvoker,
    make_message,
)

DEFAULT_TARGET = "127.0.0.1:50051"
# Embedding batches and long conversations outgrow gRPC's 4 MiB default.
_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_DEFAULT_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
)

ChatMessageLike = chat_pb2.ChatMessage | Mapping[str, Any]


def _tls(tls: bool | grpc.ChannelCredentials) -> grpc.ChannelCredentials | None:
    if tls is True:
        return grpc.ssl_channel_credentials()
    if tls is False:
        return None
    return tls


def _retry_policy(max_retries: int, retry_policy: RetryPolicy | None) -> RetryPolicy:
    if max_retries < 0:
        raise ValueError("max_retries must be >= 0")
    return retry_policy if retry_policy is not None else RetryPolicy(max_retries=max_retries)


def _with_extra_body(message_type: type[Any], fields: dict[str, Any]) -> Any:
    """Parameters the typed message lacks travel in ``extra_body`` (merged into the JSON body server-side)."""
    known = message_type.DESCRIPTOR.fields_by_name
    extra = {name: fields.pop(name) for name in list(fields) if name not in known}
    if extra:
        given = fields.get("extra_body") or {}
        if isinstance(given, struct_pb2.Struct):
            given = json_format.MessageToDict(given)
        fields["extra_body"] = {**given, **extra}
    return make_message(message_type, fields)


def chat_request(model: str, messages: Sequence[ChatMessageLike], params: Mapping[str, Any]) -> chat_pb2.ChatCompletionRequest:
    """A ``ChatCompletionRequest`` from OpenAI-style arguments (dict messages, JSON params)."""
    request: chat_pb2.ChatCompletionRequest = _with_extra_body(
        chat_pb2.ChatCompletionRequest, {**params, "model": model, "messages": list(messages)}
    )
    return request


def embedding_request(model: str, input: Any, params: Mapping[str, Any]) -> embeddings_pb2.EmbeddingRequest:  # noqa: A002
    """An ``EmbeddingRequest``; ``input`` is a string, a list of strings, or token ids, as in OpenAI's API."""
    request: embeddings_pb2.EmbeddingRequest = _with_extra_body(
        embeddings_pb2.EmbeddingRequest, {**params, "model": model, "input": input}
    )
    return request


class Relay(SyncServices):
    """Blocking client of a Relay gateway over gRPC.

    Args:
        target: ``host:port`` of the gRPC endpoint.
        api_key: a ``rly_...`` key, sent as ``authorization: Bearer`` on data-plane calls
            (and on admin calls when no ``admin_token`` is given: management keys).
        admin_token: the platform admin token, sent on control-plane (``relay.admin.v1``) calls.
        tls: False for plaintext, True for TLS with the system roots, or your own
            ``grpc.ChannelCredentials``.
        timeout: default deadline in seconds of a call, retries included (None: no deadline);
            every method takes ``timeout=`` to override it.
        max_retries: retries of idempotent calls on UNAVAILABLE / RESOURCE_EXHAUSTED.
        retry_policy: full control over backoff; replaces ``max_retries`` when given.
        channel_options: extra gRPC channel arguments.

    Every method takes a request message, a mapping, or the request's fields as
    keywords, plus ``timeout=`` and ``extra_metadata=`` (extra gRPC metadata pairs).
    Failures raise :class:`relay_sdk.RelayError` subclasses.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        api_key: str | None = None,
        admin_token: str | None = None,
        tls: bool | grpc.ChannelCredentials = False,
        timeout: float | None = 60.0,
        max_retries: int = 2,
        *,
        retry_policy: RetryPolicy | None = None,
        channel_options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        options = [*_DEFAULT_OPTIONS, *channel_options]
        credentials = _tls(tls)
        self._channel = (
            grpc.secure_channel(target, credentials, options) if credentials else grpc.insecure_channel(target, options)
        )
        retry = _retry_policy(max_retries, retry_policy)
        self._bind_services(SyncInvoker(self._channel, Credentials(api_key, admin_token), timeout, retry))

    @property
    def channel(self) -> grpc.Channel:
        """The underlying channel (e.g. for the gRPC health service)."""
        return self._channel

    def chat(
        self,
        model: str,
        messages: Sequence[ChatMessageLike],
        *,
        timeout: float | None = None,
        extra_metadata: Metadata | None = None,
        **params: Any,
    ) -> chat_pb2.ChatCompletion:
        """One chat completion.  ``messages`` are ``ChatMessage`` or OpenAI-style dicts;
        ``params`` are OpenAI parameters (``temperature=0.2``, ``tools=[...]``); unknown ones go in ``extra_body``."""
        request = chat_request(model, messages, params)
        return self.inference.create_chat_completion(request, timeout=timeout, extra_metadata=extra_metadata)

    def chat_stream(
        self,
        model: str,
        messages: Sequence[ChatMessageLike],
        *,
        timeout: float | None = None,
        extra_metadata: Metadata | None = None,
        **params: Any,
    ) -> ResponseStream[chat_pb2.ChatCompletionChunk]:
        """A streamed chat completion: iterate for ``ChatCompletionChunk``s.  Pass
        ``stream_options={"include_usage": True}`` to get a final usage chunk."""
        request = chat_request(model, messages, params)
        return self.inference.stream_chat_completion(request, timeout=timeout, extra_metadata=extra_metadata)

    def embed(
        self,
        model: str,
        input: Any,  # noqa: A002  (OpenAI's parameter name)
        *,
        timeout: float | None = None,
        extra_metadata: Metadata | None = None,
        **params: Any,
    ) -> embeddings_pb2.EmbeddingList:
        """Embeddings of ``input`` (a string or a list of strings)."""
        request = embedding_request(model, input, params)
        return self.inference.create_embedding(request, timeout=timeout, extra_metadata=extra_metadata)

    def close(self) -> None:
        """Close the channel; calls in flight are cancelled."""
        self._channel.close()

    def __enter__(self) -> Relay:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class AsyncRelay(AsyncServices):
    """``grpc.aio`` client of a Relay gateway; same arguments as :class:`Relay`.

    Create it inside the event loop that uses it (``async with AsyncRelay(...) as client``).
    Unary methods are coroutines; streaming methods and ``iter_*`` pagers return
    async iterators (no ``await``: use ``async for``).
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        api_key: str | None = None,
        admin_token: str | None = None,
        tls: bool | grpc.ChannelCredentials = False,
        timeout: float | None = 60.0,
        max_retries: int = 2,
        *,
        retry_policy: RetryPolicy | None = None,
        channel_options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        options = [*_DEFAULT_OPTIONS, *channel_options]
        credentials = _tls(tls)
        self._channel = (
            grpc.aio.secure_channel(target, credentials, options)
            if credentials
            else grpc.aio.insecure_channel(target, options)
        )
        retry = _retry_policy(max_retries, retry_policy)
        self._bind_services(AsyncInvoker(self._channel, Credentials(api_key, admin_token), timeout, retry))

    @property
    def channel(self) -> grpc.aio.Channel:
        return self._channel

    async def chat(
        self,
        model: str,
        messages: Sequence[ChatMessageLike],
        *,
        timeout: float | None = None,
        extra_metadata: Metadata | None = None,
        **params: Any,
    ) -> chat_pb2.ChatCompletion:
        """One chat completion (see :meth:`Relay.chat`)."""
        request = chat_request(model, messages, params)
        return await self.inference.create_chat_completion(request, timeout=timeout, extra_metadata=extra_metadata)

    def chat_stream(
        self,
        model: str,
        messages: Sequence[ChatMessageLike],
        *,
        timeout: float | None = None,
        extra_metadata: Metadata | None = None,
        **params: Any,
    ) -> AsyncResponseStream[chat_pb2.ChatCompletionChunk]:
        """A streamed chat completion: ``async for chunk in client.chat_stream(...)``."""
        request = chat_request(model, messages, params)
        return self.inference.stream_chat_completion(request, timeout=timeout, extra_metadata=extra_metadata)

    async def embed(
        self,
        model: str,
        input: Any,  # noqa: A002
        *,
        timeout: float | None = None,
        extra_metadata: Metadata | None = None,
        **params: Any,
    ) -> embeddings_pb2.EmbeddingList:
        """Embeddings of ``input`` (see :meth:`Relay.embed`)."""
        request = embedding_request(model, input, params)
        return await self.inference.create_embedding(request, timeout=timeout, extra_metadata=extra_metadata)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncRelay:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()
