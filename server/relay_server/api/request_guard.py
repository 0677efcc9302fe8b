"""The one validation layer every gRPC request passes before its handler.

Two kinds of input used to escape as 500s (REST) or UNKNOWN (gRPC) with
Python internals in the message, from any method:

* bytes that do not decode as the method's request message (garbage on the
  gRPC port; percent-encoded invalid UTF-8 that Envoy put into a string
  field), which gRPC's own deserialisation turns into "Unexpected
  <class DecodeError> …";
* text with a NUL character, in an id, a filter or a stored field, which
  Postgres refuses (text and jsonb cannot hold U+0000);
* a NaN or infinite number, or a Timestamp/Duration out of its defined range
  (only native gRPC clients can send these; Envoy's JSON parsing refuses
  them), which failed deep inside handlers.

Both become ``invalid_request`` (INVALID_ARGUMENT / HTTP 400) here, for every
method, by wrapping each method handler when it is registered: a failed
decode yields a marker instead of raising, and the wrapped behaviour aborts
with the error in Relay's wire format before the servicer runs.  Raw bodies
(``google.api.HttpBody``: chat, completions, embeddings) carry bytes, not
text, and are checked by their own parsers.

The guard does not dress up a missing method: every RPC in the descriptor is
implemented, and tests/e2e/test_no_stubs.py fails if one answers UNIMPLEMENTED.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message

from relay_server.api.error_mapping import abort
from relay_server.domain.request import new_request_id
from relay_server.errors import ErrorKind, RelayError

_STRING = FieldDescriptor.TYPE_STRING
_MESSAGE = FieldDescriptor.TYPE_MESSAGE
_FLOATS = (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT)


class _Invalid:
    """What a guarded deserializer returns for a request it refuses."""

    __slots__ = ("error",)

    def __init__(self, error: RelayError) -> None:
        self.error = error


def _undecodable(exc: Exception) -> RelayError:
    # The exception text names internal message types: keep it out of the reply.
    if "UTF-8" in str(exc):
        why = "a text field (in the path, query or body) is not valid UTF-8"
    else:
        why = "the request message could not be decoded"
    return RelayError(ErrorKind.BAD_REQUEST, f"Invalid request: {why}.", code="invalid_request")


def _field_error(path: str) -> RelayError:
    return RelayError(
        ErrorKind.BAD_REQUEST,
        f"Invalid value for '{path}': text must not contain NUL (\\u0000) characters, numbers must be "
        "finite and timestamps and durations within their range.",
        param=path,
        code="invalid_value",
    )


# protobuf's own bounds (timestamp.proto, duration.proto): 0001-01-01 to 9999-12-31, ±10,000 years.
_MAX_DURATION_S = 315_576_000_000


def _valid_timestamp(ts: Any) -> bool:
    return -62_135_596_800 <= ts.seconds <= 253_402_300_799 and 0 <= ts.nanos <= 999_999_999


def _valid_duration(d: Any) -> bool:
    same_sign = d.seconds == 0 or d.nanos == 0 or (d.seconds > 0) == (d.nanos > 0)
    return abs(d.seconds) <= _MAX_DURATION_S and abs(d.nanos) <= 999_999_999 and same_sign


_WELL_KNOWN: dict[str, Callable[[Any], bool]] = {
    "google.protobuf.Timestamp": _valid_timestamp,
    "google.protobuf.Duration": _valid_duration,
}


# What ``nul_field`` does with a field, decided once per field descriptor (``_plan``): the
# descriptor's properties are Python-level lookups, and most fields need no check at all.
_SKIP, _TEXT, _NUMBER, _CHECKED, _MAP, _NESTED = range(6)
_PLANS: dict[Any, tuple[int, bool, Callable[[Any], bool] | None]] = {}


def _plan(field: FieldDescriptor) -> tuple[int, bool, Callable[[Any], bool] | None]:
    plan = _PLANS.get(field)
    if plan is None:
        check = None
        if field.type == _STRING:
            kind = _TEXT
        elif field.type in _FLOATS:
            kind = _NUMBER
        elif field.type == _MESSAGE:
            message_type: Any = field.message_type
            check = _WELL_KNOWN.get(message_type.full_name)
            kind = _CHECKED if check is not None else _MAP if message_type.GetOptions().map_entry else _NESTED
        else:
            kind = _SKIP
        plan = _PLANS[field] = (kind, field.is_repeated, check)
    return plan


def nul_field(message: Message, prefix: str = "") -> str | None:
    """The path of the first field (at any depth, map keys included) holding text with a NUL
    or a non-finite number, or None."""
    for field, value in message.ListFields():
        kind, repeated, check = _PLANS.get(field) or _plan(field)
        if kind == _SKIP:
            continue
        if kind == _MAP:
            found = _nul_in_map(field, value, f"{prefix}{field.name}")
            if found:
                return found
            continue
        values = value if repeated else (value,)
        if kind == _TEXT:
            if any("\x00" in v for v in values):
                return f"{prefix}{field.name}"
        elif kind == _NUMBER:
            if not all(math.isfinite(v) for v in values):
                return f"{prefix}{field.name}"
        elif kind == _CHECKED:
            assert check is not None
            if not all(check(v) for v in values):
                return f"{prefix}{field.name}"
        else:
            path = f"{prefix}{field.name}"
            if repeated:
                found = next((p for i, m in enumerate(value) if (p := nul_field(m, f"{path}[{i}]."))), None)
            else:
                found = nul_field(value, f"{path}.")
            if found:
                return found
    return None


def _nul_in_map(field: FieldDescriptor, mapping: Any, path: str) -> str | None:
    message_type: Any = field.message_type
    value_field = message_type.fields_by_name["value"]
    for key, value in mapping.items():
        if isinstance(key, str) and "\x00" in key:
            return path
        if value_field.type == _STRING and "\x00" in value:
            return f"{path}.{key}"
        if value_field.type in _FLOATS and not math.isfinite(value):
            return f"{path}.{key}"
        if value_field.type == _MESSAGE and (found := nul_field(value, f"{path}.{key}.")):
            return found
    return None


def guard_deserializer(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """``deserializer`` that returns an ``_Invalid`` marker instead of raising or passing NUL text."""
    if deserializer is None:
        return None

    def deserialize(raw: bytes) -> Any:
        try:
            message = deserializer(raw)
        except (DecodeError, ValueError, UnicodeDecodeError) as exc:
            return _Invalid(_undecodable(exc))
        if isinstance(message, Message) and (path := nul_field(message)):
            return _Invalid(_field_error(path))
        return message

    return deserialize


async def _refuse(context: grpc.aio.ServicerContext, invalid: _Invalid) -> None:
    await abort(context, invalid.error, new_request_id())


def _guard_behaviour(handler: Any) -> dict[str, Any]:
    """The handler's behaviour, refusing marked requests first (same call shape as before)."""
    if handler.unary_unary is not None:
        inner_uu: Any = handler.unary_unary

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if isinstance(request, _Invalid):
                await _refuse(context, request)
            return await inner_uu(request, context)

        return {"unary_unary": unary_unary}
    if handler.unary_stream is not None:
        inner_us: Any = handler.unary_stream

        async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            if isinstance(request, _Invalid):
                await _refuse(context, request)
            async for reply in inner_us(request, context):
                yield reply

        return {"unary_stream": unary_stream}
    if handler.stream_unary is not None:
        inner_su: Any = handler.stream_unary

        async def stream_unary(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
            return await inner_su(_checked(requests, context), context)

        return {"stream_unary": stream_unary}
    inner_ss: Any = handler.stream_stream

    async def stream_stream(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        async for reply in inner_ss(_checked(requests, context), context):
            yield reply

    return {"stream_stream": stream_stream}


async def _checked(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
    async for request in requests:
        if isinstance(request, _Invalid):
            await _refuse(context, request)
        yield request


def guard_handler(handler: Any) -> Any:
    if handler is None:
        return None
    return handler._replace(request_deserializer=guard_deserializer(handler.request_deserializer),
                            **_guard_behaviour(handler))  # fmt: skip


class _GuardedGenericHandler(grpc.GenericRpcHandler):
    def __init__(self, inner: grpc.GenericRpcHandler) -> None:
        self._inner = inner
        self._cache: dict[str, grpc.RpcMethodHandler] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        guarded = self._cache.get(method)
        if guarded is None:
            inner = self._inner.service(handler_call_details)
            if inner is None:
                return None  # not remembered: any client can send any number of made-up method names
            guarded = self._cache[method] = guard_handler(inner)
        return guarded


class _MethodTable(grpc.GenericRpcHandler):
    """Every method a generated ``add_*Servicer_to_server`` registers, guarded, by full name."""

    def __init__(self) -> None:
        self.methods: dict[str, grpc.RpcMethodHandler] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        return self.methods.get(handler_call_details.method)


class GuardedServer:
    """A ``grpc.aio.Server`` whose every registered method goes through the guard.

    Wrapping at registration (not a per-call interceptor) costs a call nothing
    but the checks themselves.

    Methods that generated code registers with ``add_registered_method_handlers``
    are served from one generic handler (``_MethodTable``, consulted first: one
    dict lookup) instead of grpc's registered-method path.  grpc.aio's accept
    loop keeps one pending call per registered method and, for every call it
    accepts, runs ``asyncio.wait`` over all of them (one per method, ~85 here:
    ≈ 32 µs of the worker's CPU per request, an ABC ``isinstance`` per future
    among it); with only the generic path it waits on one.
    """

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server
        self._table = _MethodTable()
        server.add_generic_rpc_handlers((self._table,))

    def add_generic_rpc_handlers(self, handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(tuple(_GuardedGenericHandler(h) for h in handlers))

    def add_registered_method_handlers(self, service_name: str, method_handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        for name, handler in method_handlers.items():
            self._table.methods[f"/{service_name}/{name}"] = guard_handler(handler)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._server, name)


# Code that registers services checks ``isinstance(server, grpc.aio.Server)`` to pick its
# asyncio flavour (server reflection does): the wrapper must pass for the server it wraps.
grpc.aio.Server.register(GuardedServer)
