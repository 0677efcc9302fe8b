"""SchemaCheck may skip ParseDict only for bodies ParseDict accepts: checked over
every field of the three request schemas with values of every JSON type."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from google.protobuf import json_format

from relay_proto.relay.v1 import chat_pb2, completions_pb2, embeddings_pb2
from relay_server.api.openai_wire import validate
from relay_server.api.schema_check import SchemaCheck
from relay_server.errors import RelayError

CHAT = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\": 1}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
    ],
    "max_tokens": 64, "temperature": 0.2, "top_p": 1, "n": 1, "stream": True, "stream_options": {"include_usage": True},
    "stop": ["\n\n", "END"], "logit_bias": {"50256": -100}, "seed": 7, "user": "u-1", "metadata": {"team": "a"},
    "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}],
    "tool_choice": "auto", "response_format": {"type": "json_object"}, "parallel_tool_calls": False,
    "frequency_penalty": 0, "presence_penalty": -0.5, "logprobs": True, "top_logprobs": 3,
    "modalities": ["text"], "reasoning_effort": "low", "service_tier": "auto", "store": False,
    "some_future_field": {"anything": [1, 2, 3]},
}
COMPLETION = {"model": "gpt-3.5-turbo-instruct", "prompt": ["a", "b"], "max_tokens": 5, "echo": False, "suffix": "x",
              "best_of": 2, "logprobs": 2, "stream": False}
EMBEDDING = {"model": "text-embedding-3-small", "input": ["one", "two"], "dimensions": 256, "encoding_format": "float"}
SCHEMAS = [("chat", chat_pb2.ChatCompletionRequest, CHAT), ("completion", completions_pb2.CompletionRequest, COMPLETION),
           ("embedding", embeddings_pb2.EmbeddingRequest, EMBEDDING)]

def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


ODD_VALUES: list[Any] = [
    None, "", "text", "12", "1.5", "NaN", 0, 1, -1, 1.5, -2.5, 1e300, 2**31, 2**31 - 1, -(2**31) - 1, 2**63, 2**64,
    True, False, [], [None], [1], ["a"], [{}], [[1]], {}, {"a": 1}, {"a": None}, {"role": "user", "content": "x"},
    {"x": _nested(60)}, _nested(120),
]


def _parses(schema: type, body: Any) -> bool:
    try:
        json_format.ParseDict(body, schema(), ignore_unknown_fields=True)
    except Exception:  # noqa: BLE001
        return False
    return True


def _variants(base: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for key in [*list(base), "maxTokens", "streamOptions", "model"]:
        for value in ODD_VALUES:
            body = copy.deepcopy(base)
            body[key] = value
            out.append(body)
    if "messages" in base:  # inside a message, and inside a tool call
        for field in ("role", "content", "name", "tool_calls", "tool_call_id", "refusal", "toolCallId"):
            for value in ODD_VALUES:
                body = copy.deepcopy(base)
                body["messages"][0][field] = value
                out.append(body)
        for field in ("id", "type", "function"):
            for value in ODD_VALUES:
                body = copy.deepcopy(base)
                body["messages"][2]["tool_calls"][0][field] = value
                out.append(body)
    return out


@pytest.mark.parametrize(("kind", "schema", "base"), SCHEMAS, ids=[s[0] for s in SCHEMAS])
def test_certainly_valid_only_when_parsedict_accepts(kind: str, schema: type, base: dict[str, Any]) -> None:
    check = SchemaCheck(schema.DESCRIPTOR)
    assert check.certainly_valid(base), "the common bodies must take the quick path"
    quick = 0
    for body in _variants(base):
        if check.certainly_valid(body):
            quick += 1
            assert _parses(schema, body), f"SchemaCheck accepted a body ParseDict refuses: {body}"
    assert quick > 50  # the check is not simply saying False


def test_type_errors_still_come_from_parsedict() -> None:
    body = copy.deepcopy(CHAT)
    body["temperature"] = "hot"
    with pytest.raises(RelayError) as err:
        validate("chat", body)
    assert err.value.param == "temperature" and "Invalid type for 'temperature'" in err.value.message
    body = copy.deepcopy(CHAT)
    body["messages"][0]["name"] = 5
    with pytest.raises(RelayError) as err:
        validate("chat", body)
    assert err.value.code == "invalid_type"

