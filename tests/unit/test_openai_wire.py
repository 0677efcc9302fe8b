"""Request decoding and validation: every bad input is a precise 4xx, never a crash."""

from __future__ import annotations

import pytest

from relay_server.api.openai_wire import decode_body, validate
from relay_server.errors import ErrorKind, RelayError

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def _error(kind, body) -> RelayError:
    with pytest.raises(RelayError) as info:
        validate(kind, body)
    return info.value


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"", "empty"),
        (b"{not json", "not valid JSON"),
        (b'{"model": "\xff\xfe"}', "UTF-8"),
        (b"[1, 2]", "JSON object"),
        (b'"just a string"', "JSON object"),
    ],
)
def test_undecodable_bodies_are_400_invalid_json(raw: bytes, fragment: str) -> None:
    with pytest.raises(RelayError) as info:
        decode_body(raw)
    assert info.value.kind is ErrorKind.INVALID_JSON
    assert info.value.http_status == 400
    assert fragment in info.value.message


def test_a_valid_chat_request_keeps_unknown_fields() -> None:
    body = decode_body(b'{"model":"m","messages":[{"role":"user","content":"hi"}],"future_field":{"x":[1]}}')
    validate("chat", body)
    assert body["future_field"] == {"x": [1]}


@pytest.mark.parametrize(
    ("body", "param", "status"),
    [
        ({"messages": CHAT["messages"]}, "model", 400),
        ({**CHAT, "model": ""}, "model", 400),
        ({**CHAT, "model": 7}, "model", 400),
        ({"model": "m"}, "messages", 400),
        ({"model": "m", "messages": []}, "messages", 400),
        ({"model": "m", "messages": "hi"}, "messages", 400),
        ({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role", 400),
        ({"model": "m", "messages": [{"role": "user"}]}, "messages[0].content", 400),
        ({"model": "m", "messages": [{"role": "user", "content": 5}]}, "messages[0].content", 400),
        ({"model": "m", "messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id", 400),
        ({**CHAT, "temperature": "hot"}, "temperature", 400),
        ({**CHAT, "n": "two"}, "n", 400),
        ({**CHAT, "temperature": 3}, "temperature", 422),
        ({**CHAT, "top_p": -0.1}, "top_p", 422),
        ({**CHAT, "n": 0}, "n", 422),
        ({**CHAT, "max_tokens": 0}, "max_tokens", 422),
        ({**CHAT, "stream_options": {"include_usage": True}}, "stream_options", 400),
    ],
)
def test_invalid_chat_requests(body: dict, param: str, status: int) -> None:
    err = _error("chat", body)
    assert err.param == param
    assert err.http_status == status
    assert err.body()["error"]["param"] == param


def test_completion_requires_prompt() -> None:
    assert _error("completion", {"model": "m"}).param == "prompt"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "e"}, "input"),
        ({"model": "e", "input": ""}, "input"),
        ({"model": "e", "input": []}, "input"),
        ({"model": "e", "input": 5}, "input"),
        ({"model": "e", "input": "x", "encoding_format": "hex"}, "encoding_format"),
        ({"model": "e", "input": "x", "dimensions": 0}, "dimensions"),
    ],
)
def test_invalid_embedding_requests(body: dict, param: str) -> None:
    assert _error("embedding", body).param == param


def test_deeply_nested_json_is_a_clean_error_not_a_crash() -> None:
    raw = b'{"model":"m","messages":[{"role":"user","content":' + b"[" * 5000 + b"]" * 5000 + b"}]}"
    with pytest.raises(RelayError) as info:
        validate("chat", decode_body(raw))
    assert info.value.http_status == 400
