"""Both directions of the Anthropic ↔ OpenAI pair, round-tripped on recorded-shaped fixtures,
the native passthrough state machine, and the Anthropic column of the error table."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from relay_server.domain.provider import Credential, ProviderCall, Usage
from relay_server.errors import ANTHROPIC_ERRORS, ErrorKind, RelayError
from relay_server.providers.anthropic_native import AnthropicNative, NativeStream
from relay_server.providers.anthropic_openai.responses import anthropic_message, openai_response
from relay_server.providers.anthropic_openai.to_anthropic_events import AnthropicEvents
from relay_server.providers.anthropic_openai.to_anthropic_request import build_body
from relay_server.providers.anthropic_openai.to_openai_chunks import AnthropicStreamTranslator
from relay_server.providers.anthropic_openai.to_openai_request import openai_request
from relay_server.providers.sse import SSEEvent, SSEParser
from relay_server.providers.translator import ProviderFailure

TOOLS = [{"name": "get_weather", "description": "Weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}},
         {"name": "get_time", "input_schema": {"type": "object", "properties": {}}}]
# A Claude Code-like conversation: system blocks, two tool calls in one turn, their results
# (one as blocks) followed by text, an image.
REQUEST: dict[str, Any] = {
    "model": "claude-sonnet-4",
    "max_tokens": 1024,
    "system": "You are a coding agent.",
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "Weather and time in Paris?"},
                                     {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Checking both."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18 C"},
            {"type": "tool_result", "tool_use_id": "toolu_2", "content": "09:00"},
            {"type": "text", "text": "Summarise."}]},
    ],
    "tools": TOOLS,
    "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
    "stop_sequences": ["END"],
    "temperature": 0.2,
    "metadata": {"user_id": "u-42"},
}


def call_for(body: dict[str, Any], native: dict[str, Any] | None = None) -> ProviderCall:
    return ProviderCall("chat", body, "claude-sonnet-4-20250514", "req_1", door="anthropic", native_body=native,
                        credential=Credential("cred_1", "sk-ant"))


# --- requests ----------------------------------------------------------------------------------


def test_request_round_trip_anthropic_openai_anthropic() -> None:
    original = copy.deepcopy(REQUEST)
    openai_form = openai_request(REQUEST)
    assert original == REQUEST  # pure: the client's body is replayed on failover
    assert [m["role"] for m in openai_form["messages"]] == ["system", "user", "assistant", "tool", "tool", "user"]
    assert [c["id"] for c in openai_form["messages"][2]["tool_calls"]] == ["toolu_1", "toolu_2"]
    assert openai_form["parallel_tool_calls"] is False and openai_form["tool_choice"] == "auto"
    assert openai_form["max_tokens"] == 1024  # the spend reservation's input
    back = build_body(call_for(openai_form), stream=False)
    expected = {**REQUEST, "model": "claude-sonnet-4-20250514"}
    assert back == expected


def test_request_mapping_details() -> None:
    body = openai_request({
        "model": "m", "max_tokens": 10, "stream": True, "top_k": 3,
        "system": [{"type": "text", "text": "A", "cache_control": {"type": "ephemeral"}}, {"type": "text", "text": "B"}],
        "messages": [{"role": "user", "content": [
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"}},
            {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}]}],
        "tools": [{"type": "web_search_20250305", "name": "web_search"}, *TOOLS],
        "tool_choice": {"type": "tool", "name": "get_time"},
        "thinking": {"type": "enabled", "budget_tokens": 8000},
    })
    assert body["messages"][0] == {"role": "system", "content": "A\n\nB"}
    assert body["messages"][1]["content"][0]["type"] == "file"
    assert body["messages"][1]["content"][1] == {"type": "image_url", "image_url": {"url": "https://x/y.png"}}
    assert [t["function"]["name"] for t in body["tools"]] == ["get_weather", "get_time"]  # server tools: Claude only
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_time"}}
    assert body["reasoning_effort"] == "medium" and "top_k" not in body
    assert body["stream_options"] == {"include_usage": True}


def test_tool_result_images_and_errors() -> None:
    body = openai_request({"model": "m", "max_tokens": 5, "messages": [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "shot", "input": {}},
                                          {"type": "tool_use", "id": "t2", "name": "run", "input": {}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": [
                {"type": "text", "text": "screen:"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}]},
            {"type": "tool_result", "tool_use_id": "t2", "is_error": True, "content": "exit 1"}]}]})
    assert [m["role"] for m in body["messages"]] == ["assistant", "tool", "tool", "user"]
    assert body["messages"][1]["content"] == "screen:" and body["messages"][2]["content"] == "Error: exit 1"
    assert body["messages"][3]["content"] == [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]


@pytest.mark.parametrize(("body", "param"), [
    ({"model": "m", "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
    ({"model": "m", "max_tokens": 5, "messages": []}, "messages"),
    ({"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}, "messages.0.role"),
    ({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "tool_result"}]}]},
     "messages.0.content.0.tool_use_id"),
    ({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "thinking": {"type": "enabled"}},
     "thinking.budget_tokens"),
])
def test_bad_requests_are_400_invalid_request_errors(body: dict[str, Any], param: str) -> None:
    with pytest.raises(RelayError) as info:
        openai_request(body)
    assert info.value.param == param
    assert info.value.anthropic()[0] == 400 and info.value.anthropic()[1]["error"]["type"] == "invalid_request_error"


# --- whole answers -----------------------------------------------------------------------------

MESSAGE = {
    "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-20250514",
    "content": [{"type": "thinking", "thinking": "Two tools.", "signature": ""},
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}}],
    "stop_reason": "tool_use", "stop_sequence": None,
    "usage": {"input_tokens": 100, "output_tokens": 30, "cache_creation_input_tokens": 20, "cache_read_input_tokens": 500},
}


def test_response_round_trip_anthropic_openai_anthropic() -> None:
    chat = openai_response(MESSAGE, "claude")
    assert chat["usage"]["prompt_tokens"] == 620 and chat["usage"]["prompt_tokens_details"] == {"cached_tokens": 500}
    assert Usage.from_openai(chat["usage"]) == Usage(620, 30, 500, 20)
    assert anthropic_message(chat, message_id="msg_1") == MESSAGE


# --- streams -----------------------------------------------------------------------------------


def sse(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def recorded_stream() -> bytes:
    """A Claude stream as Anthropic sends it: thinking, text, two tool calls, usage on both ends."""
    start = {"type": "message_start", "message": {**MESSAGE, "content": [], "stop_reason": None,
             "usage": {"input_tokens": 100, "output_tokens": 1, "cache_creation_input_tokens": 20, "cache_read_input_tokens": 500}}}
    frames = [sse("message_start", start)]

    def block(i: int, opening: dict[str, Any], deltas: list[dict[str, Any]]) -> None:
        frames.append(sse("content_block_start", {"type": "content_block_start", "index": i, "content_block": opening}))
        if i == 0:
            frames.append(sse("ping", {"type": "ping"}))
        frames.extend(sse("content_block_delta", {"type": "content_block_delta", "index": i, "delta": d}) for d in deltas)
        frames.append(sse("content_block_stop", {"type": "content_block_stop", "index": i}))

    block(0, {"type": "thinking", "thinking": "", "signature": ""},
          [{"type": "thinking_delta", "thinking": "Two "}, {"type": "thinking_delta", "thinking": "tools."}])
    block(1, {"type": "text", "text": ""}, [{"type": "text_delta", "text": "Let me "}, {"type": "text_delta", "text": "check."}])
    block(2, {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}},
          [{"type": "input_json_delta", "partial_json": '{"ci'}, {"type": "input_json_delta", "partial_json": 'ty": "Paris"}'}])
    block(3, {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}}, [])
    frames.append(sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                                        "usage": {"output_tokens": 30}}))
    frames.append(sse("message_stop", {"type": "message_stop"}))
    return b"".join(frames)


def assemble(raw: bytes) -> tuple[list[str], dict[str, Any]]:
    """(event names, the message a client SDK builds from them)."""
    names: list[str] = []
    message: dict[str, Any] = {}
    for event in SSEParser().feed(raw):
        data = orjson.loads(event.data)
        assert data["type"] == event.event
        names.append(event.event)
        if event.event == "message_start":
            message = copy.deepcopy(data["message"])
        elif event.event == "content_block_start":
            assert data["index"] == len(message["content"])
            message["content"].append(copy.deepcopy(data["content_block"]))
        elif event.event == "content_block_delta":
            blk, delta = message["content"][data["index"]], data["delta"]
            key = {"text_delta": "text", "thinking_delta": "thinking", "input_json_delta": "_json"}[delta["type"]]
            value = delta.get("text") or delta.get("thinking") or delta.get("partial_json")
            blk[key] = blk.get(key, "") + value
        elif event.event == "message_delta":
            message["stop_reason"] = data["delta"]["stop_reason"]
            message["usage"].update(data["usage"])
    for blk in message.get("content", []):
        if blk["type"] == "tool_use":
            blk["input"] = orjson.loads(blk.pop("_json", "") or "{}")
    return names, message


def test_stream_round_trip_anthropic_openai_anthropic() -> None:
    raw = recorded_stream()
    to_openai = AnthropicStreamTranslator("claude")
    chunks = [c for e in SSEParser().feed(raw) for c in to_openai.feed(e)]
    assert to_openai.done
    encoder = AnthropicEvents("msg_1", "claude", estimated_input=90)
    out = b"".join(f for c in chunks for f in encoder.chunk(c)) + b"".join(encoder.end())
    names, rebuilt = assemble(out)
    _, original = assemble(raw)
    assert names.count("message_start") == 1 and names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-2:] == ["message_delta", "message_stop"] and names.count("ping") == 1
    assert [b["type"] for b in rebuilt["content"]] == ["thinking", "text", "tool_use", "tool_use"]
    assert rebuilt["content"] == original["content"]  # the first text after thinking is kept, tools stay apart
    assert rebuilt["stop_reason"] == "tool_use"
    assert rebuilt["usage"] == {"input_tokens": 100, "output_tokens": 30, "cache_creation_input_tokens": 20,
                                "cache_read_input_tokens": 500}


def test_an_empty_openai_stream_still_has_anthropics_frame() -> None:
    encoder = AnthropicEvents("msg_1", "m", estimated_input=7)
    names, message = assemble(b"".join(encoder.end()))
    assert names == ["message_start", "message_delta", "message_stop"]
    assert message["usage"]["input_tokens"] == 7 and message["stop_reason"] == "end_turn"


def test_native_stream_passes_bytes_and_merges_usage_from_both_ends() -> None:
    raw = recorded_stream().replace(b'"usage":{"output_tokens":30}', b'"usage":{"output_tokens":30,"input_tokens":110}')
    state = NativeStream()
    events = [n for e in SSEParser().feed(raw) for n in state.feed(e)]
    assert b"".join(n.data for n in events) == raw
    assert state.done and state.finish() == []
    final = next(i for i, n in enumerate(events) if n.data.startswith(b"event: message_delta"))
    assert all(n.usage is None for n in events[:final])  # message_start's output count is a placeholder
    assert events[-1].usage == Usage(prompt_tokens=110 + 500 + 20, completion_tokens=30, cache_read_tokens=500, cache_write_tokens=20)
    assert "".join(n.text for n in events) == 'Two tools.Let me check.{"city": "Paris"}'
    assert [n.output for n in events].index(True) == 3  # the first delta, not message_start or ping


def test_native_stream_errors_and_cuts_raise() -> None:
    state = NativeStream()
    with pytest.raises(ProviderFailure) as info:
        state.feed(SSEEvent("error", '{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'))
    assert info.value.retryable
    with pytest.raises(ProviderFailure):
        NativeStream().finish()


def test_native_request_is_the_clients_body_with_the_providers_model() -> None:
    native = {"model": "claude-sonnet-4", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "future": {"a": 1}}
    call = ProviderCall("chat", openai_request(native), "claude-sonnet-4-20250514", "req_1", door="anthropic",
                        native_body=native, native_headers={"anthropic-beta": "b1", "anthropic-version": "2025-01-01"},
                        credential=Credential("c", "sk-ant"))
    request = AnthropicNative().request(call, stream=True)
    assert request.json_body == {**native, "model": "claude-sonnet-4-20250514", "stream": True}
    assert request.headers["anthropic-beta"] == "b1" and request.headers["anthropic-version"] == "2025-01-01"
    assert native["model"] == "claude-sonnet-4"  # never mutated
    counted = AnthropicNative().count_tokens_request(call)
    assert counted.url.endswith("/messages/count_tokens") and set(counted.json_body) == {"model", "messages"}


# --- errors --------------------------------------------------------------------------------------


def test_every_error_kind_has_an_anthropic_row() -> None:
    assert set(ANTHROPIC_ERRORS) == set(ErrorKind)


@pytest.mark.parametrize(("kind", "status", "type_"), [
    (ErrorKind.SPEND_CAP_EXCEEDED, 402, "billing_error"),
    (ErrorKind.INVALID_API_KEY, 401, "authentication_error"),
    (ErrorKind.MODEL_NOT_FOUND, 404, "not_found_error"),
    (ErrorKind.RATE_LIMIT_EXCEEDED, 429, "rate_limit_error"),
    (ErrorKind.NO_PROVIDER_AVAILABLE, 529, "overloaded_error"),
    (ErrorKind.INVALID_REQUEST, 400, "invalid_request_error"),
    (ErrorKind.INTERNAL, 500, "api_error"),
])
def test_anthropic_error_shape(kind: ErrorKind, status: int, type_: str) -> None:
    assert RelayError(kind, "m").anthropic() == (status, {"type": "error", "error": {"type": type_, "message": "m"}})


def test_a_providers_own_status_is_kept() -> None:
    passed = RelayError(ErrorKind.BAD_REQUEST, "too long", http_status=413)
    assert passed.anthropic() == (413, {"type": "error", "error": {"type": "request_too_large", "message": "too long"}})
