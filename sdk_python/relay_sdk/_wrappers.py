"""What every generated method does: build the request, add auth, call, retry, map errors.

The generated ``_gen/methods.py`` holds one ``MethodSpec`` per RPC and
thin typed methods; they all end in :class:`SyncInvoker` or
:class:`AsyncInvoker` here, so the behaviour is written (and tested) once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

import grpc
import grpc.aio
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from relay_sdk._errors import from_rpc_error
from relay_sdk._pagers import AsyncPager, Pager
from relay_sdk._retry import Deadline, RetryPolicy, is_idempotent
from relay_sdk._streams import AsyncResponseStream, ResponseStream

__all__ = [
    "AsyncInvoker",
    "AsyncResponseStream",
    "Credentials",
    "Metadata",
    "MethodSpec",
    "ResponseStream",
    "SyncInvoker",
    "build_request",
    "make_message",
]

ReqT = TypeVar("ReqT", bound=Message)
RespT = TypeVar("RespT", bound=Message)
Metadata = Sequence[tuple[str, str | bytes]] | Mapping[str, str | bytes]

# Fields whose Python value is plain JSON (str, list, dict, None …), parsed with json_format.
_JSON_TYPES = frozenset({"google.protobuf.Value", "google.protobuf.Struct", "google.protobuf.ListValue"})


@dataclass(frozen=True, slots=True)
class MethodSpec(Generic[ReqT, RespT]):
    """One RPC: its path, message types and plane (admin RPCs use the admin token)."""

    path: str  # "/relay.admin.v1.ApiKeyService/CreateApiKey"
    request_type: type[ReqT]
    response_type: type[RespT]
    admin: bool = False

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[1]


@dataclass(frozen=True, slots=True)
class Credentials:
    """Bearer tokens: the API key for the data plane, the admin token (else the key) for admin RPCs."""

    api_key: str | None = None
    admin_token: str | None = None

    def metadata(self, spec: MethodSpec[Any, Any], extra: Metadata | None) -> tuple[tuple[str, str | bytes], ...]:
        # Accept a mapping ({"x-header": "v"}) as well as gRPC's sequence of pairs.
        extra = tuple(extra.items()) if isinstance(extra, Mapping) else tuple(extra or ())
        token = (self.admin_token or self.api_key) if spec.admin else self.api_key
        # A caller-supplied authorization entry wins (e.g. acting with another key for one call).
        if token and not any(key.lower() == "authorization" for key, _ in extra):
            return (("authorization", f"Bearer {token}"), *extra)
        return extra


def _coerce_one(field: FieldDescriptor, value: Any) -> Any:
    if field.message_type is None or isinstance(value, Message):
        return value
    if isinstance(value, Mapping) or field.message_type.full_name in _JSON_TYPES:
        return json_format.ParseDict(value, message_factory.GetMessageClass(field.message_type)())
    return value  # e.g. a datetime for a Timestamp: the constructor knows it


def _coerce(field: FieldDescriptor, value: Any) -> Any:
    """Python values (dicts, JSON for Value/Struct) → what the message constructor accepts."""
    if field.message_type is None:
        return value
    if field.message_type.GetOptions().map_entry:
        value_field = field.message_type.fields_by_name["value"]
        return {key: _coerce_one(value_field, item) for key, item in value.items()}
    if field.is_repeated:
        return [_coerce_one(field, item) for item in value]
    return _coerce_one(field, value)


def make_message(message_type: type[ReqT], fields: Mapping[str, Any]) -> ReqT:
    """Build ``message_type`` from keyword fields; ``None`` values are left unset."""
    descriptor = message_type.DESCRIPTOR
    kwargs: dict[str, Any] = {}
    for name, value in fields.items():
        field = descriptor.fields_by_name.get(name)
        if field is None:
            known = ", ".join(sorted(descriptor.fields_by_name))
            raise TypeError(f"{descriptor.name} has no field {name!r} (fields: {known})")
        if value is not None:
            kwargs[name] = _coerce(cast(FieldDescriptor, field), value)
    try:
        return message_type(**kwargs)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"cannot build {descriptor.name}: {exc}") from exc


def build_request(request_type: type[ReqT], request: ReqT | Mapping[str, Any] | None, fields: Mapping[str, Any]) -> ReqT:
    """A request message from a message, a mapping of fields, or keyword fields (exactly one)."""
    if isinstance(request, Mapping):
        if fields:
            raise TypeError("pass the request as a mapping or as keyword fields, not both")
        return make_message(request_type, request)
    if request is None:
        return make_message(request_type, fields)
    if not isinstance(request, request_type):
        raise TypeError(f"expected {request_type.DESCRIPTOR.full_name}, got {type(request).__name__}")
    if fields:
        raise TypeError("pass a request message or keyword fields, not both")
    return request


def _with_page_token(request: ReqT, token: str) -> ReqT:
    page = type(request)()
    page.CopyFrom(request)
    setattr(page, "page_token", token)
    return page


class _Invoker:
    def __init__(self, credentials: Credentials, timeout: float | None, retry: RetryPolicy) -> None:
        self._credentials = credentials
        self._timeout = timeout
        self._retry = retry

    def _prepare(
        self,
        spec: MethodSpec[ReqT, Any],
        request: ReqT | Mapping[str, Any] | None,
        fields: Mapping[str, Any],
        timeout: float | None,
        extra: Metadata | None,
    ) -> tuple[ReqT, tuple[tuple[str, str | bytes], ...], float | None, bool]:
        message = build_request(spec.request_type, request, fields)
        metadata = self._credentials.metadata(spec, extra)
        effective = self._timeout if timeout is None else timeout
        return message, metadata, effective, is_idempotent(spec.name, message)


def _is_admin(spec: MethodSpec[Any, Any]) -> bool:
    """Control-plane calls (``relay.admin.v1``): they wait out a tenant's provisioning."""
    return spec.path.startswith("/relay.admin.")


class SyncInvoker(_Invoker):
    """Runs RPCs on a blocking ``grpc.Channel``."""

    def __init__(self, channel: grpc.Channel, credentials: Credentials, timeout: float | None, retry: RetryPolicy) -> None:
        super().__init__(credentials, timeout, retry)
        self._channel = channel

    def unary(
        self,
        spec: MethodSpec[ReqT, RespT],
        request: ReqT | Mapping[str, Any] | None,
        fields: Mapping[str, Any],
        timeout: float | None,
        extra: Metadata | None,
    ) -> RespT:
        message, metadata, effective, idempotent = self._prepare(spec, request, fields, timeout, extra)
        call: Callable[..., RespT] = self._channel.unary_unary(
            spec.path, request_serializer=spec.request_type.SerializeToString, response_deserializer=spec.response_type.FromString
        )
        deadline, attempt = Deadline(effective), 0
        while True:
            try:
                return call(message, timeout=deadline.remaining(), metadata=metadata)
            except grpc.RpcError as exc:
                error = from_rpc_error(exc)
                wait = self._retry.delay(attempt, error, idempotent=idempotent, remaining=deadline.remaining(), admin=_is_admin(spec))
                if wait is None:
                    raise error from exc
            self._retry.sleep(wait)
            attempt += 1

    def stream(
        self,
        spec: MethodSpec[ReqT, RespT],
        request: ReqT | Mapping[str, Any] | None,
        fields: Mapping[str, Any],
        timeout: float | None,
        extra: Metadata | None,
    ) -> ResponseStream[RespT]:
        message, metadata, effective, idempotent = self._prepare(spec, request, fields, timeout, extra)
        multi = self._channel.unary_stream(
            spec.path, request_serializer=spec.request_type.SerializeToString, response_deserializer=spec.response_type.FromString
        )
        return ResponseStream(lambda remaining: multi(message, timeout=remaining, metadata=metadata), self._retry, idempotent, effective)

    def pager(
        self,
        spec: MethodSpec[ReqT, RespT],
        items_field: str,
        request: ReqT | Mapping[str, Any] | None,
        fields: Mapping[str, Any],
        timeout: float | None,
        extra: Metadata | None,
    ) -> Pager[Any, RespT]:
        first = build_request(spec.request_type, request, fields)
        return Pager(
            lambda token: self.unary(spec, _with_page_token(first, token), {}, timeout, extra),
            items_field,
            getattr(first, "page_token"),
        )


class AsyncInvoker(_Invoker):
    """Runs RPCs on a ``grpc.aio.Channel``."""

    def __init__(self, channel: grpc.aio.Channel, credentials: Credentials, timeout: float | None, retry: RetryPolicy) -> None:
        super().__init__(credentials, timeout, retry)
        self._channel = channel

    async def unary(
        self,
        spec: MethodSpec[ReqT, RespT],
        request: ReqT | Mapping[str, Any] | None,
        fields: Mapping[str, Any],
        timeout: float | None,
        extra: Metadata | None,
    ) -> RespT:
        message, metadata, effective, idempotent = self._prepare(spec, request, fields, timeout, extra)
        call = self._channel.unary_unary(
            spec.path, request_serializer=spec.request_type.SerializeToString, response_deserializer=spec.response_type.FromString
        )
        deadline, attempt = Deadline(effective), 0
        while True:
            try:
                response: RespT = await call(message, timeout=deadline.remaining(), metadata=metadata)
                return response
            except grpc.RpcError as exc:
                error = from_rpc_error(exc)
                wait = self._retry.delay(attempt, error, idempotent=idempotent, remaining=deadline.remaining(), admin=_is_admin(spec))
                if wait is None:
                    raise error from exc
            await self._retry.async_sleep(wait)
            attempt += 1

    def stream(
        self,
        spec: MethodSpec[ReqT, RespT],
        request: ReqT | Mapping[str, Any] | None,
        fields: Mapping[str, Any],
        timeout: float | None,
        extra: Metadata | None,
    ) -> AsyncResponseStream[RespT]:
        message, metadata, effective, idempotent = self._prepare(spec, request, fields, timeout, extra)
        multi = self._channel.unary_stream(
            spec.path, request_serializer=spec.request_type.SerializeToString, response_deserializer=spec.response_type.FromString
        )
        return AsyncResponseStream(
            lambda remaining: multi(message, timeout=remaining, metadata=metadata), self._retry, idempotent, effective
        )

    def pager(
        self,
        spec: MethodSpec[ReqT, RespT],
        items_field: str,
        request: ReqT | Mapping[str, Any] | None,
        fields: Mapping[str, Any],
        timeout: float | None,
        extra: Metadata | None,
    ) -> AsyncPager[Any, RespT]:
        first = build_request(spec.request_type, request, fields)
        return AsyncPager(
            lambda token: self.unary(spec, _with_page_token(first, token), {}, timeout, extra),
            items_field,
            getattr(first, "page_token"),
        )
