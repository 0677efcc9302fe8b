"""Raw OpenAI request bodies → validated JSON objects.

The REST facade receives bodies as bytes (so no field is lost on the way to the
provider).  This module decodes them, checks them against the typed protos of
``relay.v1`` (wrong types are rejected exactly where the schema says so) and
applies OpenAI's value rules.  Syntax and type errors are 400s, as OpenAI
returns them; values that parse but make no sense are 422 ``invalid_request``,
as the spec's error table says.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, cast

import orjson
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message

from relay_proto.relay.v1 import chat_pb2, completions_pb2, embeddings_pb2
from relay_server.api.schema_check import SchemaCheck
from relay_server.domain.provider import RequestKind
from relay_server.errors import ErrorKind, RelayError

_SCHEMAS: dict[RequestKind, type[Message]] = {
    "chat": chat_pb2.ChatCompletionRequest,
    "completion": completions_pb2.CompletionRequest,
    "embedding": embeddings_pb2.EmbeddingRequest,
}

# Most bodies are plainly well typed: skip ParseDict for them (schema_check.py says why).
# (The stubs type DESCRIPTOR as the pure-Python or the upb descriptor; both have the same API.)
_CHECKS = {kind: SchemaCheck(cast(Descriptor, schema.DESCRIPTOR)) for kind, schema in _SCHEMAS.items()}

_ROLES = {"system", "developer", "user", "assistant", "tool", "function"}

# (field, low, high): inclusive numeric bounds from OpenAI's API reference.
_RANGES: dict[RequestKind, tuple[tuple[str, float, float], ...]] = {
    "chat": (
        ("temperature", 0, 2),
        ("top_p", 0, 1),
        ("n", 1, 128),
        ("max_tokens", 1, 2**31 - 1),
        ("max_completion_tokens", 1, 2**31 - 1),
        ("presence_penalty", -2, 2),
        ("frequency_penalty", -2, 2),
        ("top_logprobs", 0, 20),
    ),
    "completion": (
        ("temperature", 0, 2),
        ("top_p", 0, 1),
        ("n", 1, 128),
        ("best_of", 1, 20),
        ("max_tokens", 0, 2**31 - 1),
        ("presence_penalty", -2, 2),
        ("frequency_penalty", -2, 2),
        ("logprobs", 0, 5),
    ),
    "embedding": (("dimensions", 1, 65536),),
}

# json_format names the field it choked on, e.g. "Couldn't parse float: hot at
# ChatCompletionRequest.temperature" or "Failed to parse temperature field: ...".
_FIELD_RE = re.compile(r" at [A-Za-z]\w*\.([\w.\[\]]+)\s*$|(?:Failed to parse|for) (\w+) field")


def decode_body(raw: bytes) -> dict[str, Any]:
    """Bytes → JSON object, or a 400 that says what is wrong."""
    if not raw:
        raise RelayError(ErrorKind.INVALID_JSON, "The request body is empty; expected a JSON object.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        detail = "is not valid UTF-8" if "utf-8" in str(exc).lower() else f"is not valid JSON ({exc})"
        raise RelayError(ErrorKind.INVALID_JSON, f"We could not parse the JSON body of your request: it {detail}.") from None
    if not isinstance(body, dict):
        raise RelayError(ErrorKind.INVALID_JSON, "The request body must be a JSON object.")
    return body


def validate(kind: RequestKind, body: Mapping[str, Any]) -> None:
    """Check ``body`` against the typed schema and OpenAI's rules."""
    _require_model(body)
    if not _CHECKS[kind].certainly_valid(body):
        _parse_typed(kind, body)  # the authority on types, and the source of every type error
    _check_ranges(kind, body)
    _check_stream_options(body)
    if kind == "chat":
        _check_messages(body.get("messages"))
    elif kind == "completion":
        _require_present(body, "prompt")
    else:
        _check_embedding_input(body)


def _parse_typed(kind: RequestKind, body: Mapping[str, Any]) -> None:
    try:
        # ParseDict only reads the body (its stub asks for a dict).
        json_format.ParseDict(cast(dict[str, Any], body), _SCHEMAS[kind](), ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        match = _FIELD_RE.search(str(exc))
        param = (match.group(1) or match.group(2)) if match else None
        detail = str(exc).split(" at ", 1)[0]
        message = f"Invalid type for '{param}': {detail}." if param else f"Invalid request body: {detail}."
        raise RelayError(ErrorKind.BAD_REQUEST, message, param=param, code="invalid_type") from None
    except (ValueError, TypeError, ArithmeticError, RecursionError) as exc:
        raise RelayError(ErrorKind.BAD_REQUEST, f"Invalid request body: {exc}", code="invalid_type") from None


def _require_model(body: Mapping[str, Any]) -> None:
    model = body.get("model")
    if model is None or model == "":
        raise RelayError(
            ErrorKind.BAD_REQUEST,
            "you must provide a model parameter",
            param="model",
            code="missing_required_parameter",
        )
    if not isinstance(model, str):
        raise RelayError(ErrorKind.BAD_REQUEST, "'model' must be a string.", param="model", code="invalid_type")


def _require_present(body: Mapping[str, Any], name: str) -> None:
    if body.get(name) is None:
        raise RelayError(
            ErrorKind.BAD_REQUEST,
            f"Missing required parameter: '{name}'.",
            param=name,
            code="missing_required_parameter",
        )


def _check_ranges(kind: RequestKind, body: Mapping[str, Any]) -> None:
    for name, low, high in _RANGES[kind]:
        value = body.get(name)
        if value is None or isinstance(value, bool):
            continue
        if not isinstance(value, (int, float)):
            # Only a typed gRPC request's extra_body can get here with another type (JSON bodies are typed first).
            raise RelayError(ErrorKind.BAD_REQUEST, f"Invalid type for '{name}': expected a number.", param=name,
                             code="invalid_type")  # fmt: skip
        if not low <= value <= high:
            raise RelayError(
                ErrorKind.INVALID_REQUEST,
                f"Invalid '{name}': {value} is out of range; expected a value from {low} to {high}.",
                param=name,
                code="invalid_value",
            )


def _check_stream_options(body: Mapping[str, Any]) -> None:
    if body.get("stream_options") is not None and body.get("stream") is not True:
        raise RelayError(
            ErrorKind.BAD_REQUEST,
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            param="stream_options",
            code="invalid_value",
        )


def _check_messages(messages: Any) -> None:
    if messages is None:
        raise RelayError(
            ErrorKind.BAD_REQUEST,
            "Missing required parameter: 'messages'.",
            param="messages",
            code="missing_required_parameter",
        )
    if not isinstance(messages, list) or not messages:
        raise RelayError(
            ErrorKind.BAD_REQUEST,
            "'messages' must be a non-empty array of message objects.",
            param="messages",
            code="invalid_value",
        )
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise RelayError(ErrorKind.BAD_REQUEST, f"Invalid '{where}': expected an object.", param=where, code="invalid_type")
        role = message.get("role")
        if role not in _ROLES:
            raise RelayError(
                ErrorKind.BAD_REQUEST,
                f"Invalid value for '{where}.role': {role!r}. Supported values are: {', '.join(sorted(_ROLES))}.",
                param=f"{where}.role",
                code="invalid_value",
            )
        content = message.get("content")
        if role in {"system", "developer", "user", "tool"} and content is None:
            raise RelayError(
                ErrorKind.BAD_REQUEST,
                f"Missing required parameter: '{where}.content'.",
                param=f"{where}.content",
                code="missing_required_parameter",
            )
        if content is not None and not isinstance(content, (str, list)):
            raise RelayError(
                ErrorKind.BAD_REQUEST,
                f"Invalid type for '{where}.content': expected a string or an array of content parts.",
                param=f"{where}.content",
                code="invalid_type",
            )
        if role == "tool" and not message.get("tool_call_id"):
            raise RelayError(
                ErrorKind.BAD_REQUEST,
                f"Missing required parameter: '{where}.tool_call_id'.",
                param=f"{where}.tool_call_id",
                code="missing_required_parameter",
            )


def _check_embedding_input(body: Mapping[str, Any]) -> None:
    _require_present(body, "input")
    value = body["input"]
    if value == "" or value == []:
        raise RelayError(ErrorKind.BAD_REQUEST, "'input' cannot be an empty string or array.", param="input", code="invalid_value")
    if not isinstance(value, (str, list)):
        raise RelayError(ErrorKind.BAD_REQUEST, "'input' must be a string or an array.", param="input", code="invalid_type")
    fmt = body.get("encoding_format")
    if fmt is not None and fmt not in ("float", "base64"):
        raise RelayError(
            ErrorKind.BAD_REQUEST,
            f"Invalid value for 'encoding_format': {fmt!r}. Supported values are: 'float' and 'base64'.",
            param="encoding_format",
            code="invalid_value",
        )
