"""OpenAI <-> Anthropic Messages translation: requests, responses, streams, errors (pure)."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from relay_server.domain.provider import Credential, ProviderCall, Usage
from relay_server.errors import ErrorKind
from relay_server.providers.anthropic import AnthropicTranslator
from relay_server.providers.sse import SSEEvent
from relay_server.providers.translator import ProviderFailure

KEY = "sk-ant-secret-9876"
T = AnthropicTranslator()

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def make_call(body: dict[str, Any], model: str = "claude-3-5-sonnet-20241022", kind: str = "chat") -> ProviderCall:
    return ProviderCall(kind, body, model, "req_1", Credential("cred", KEY))  # type: ignore[arg-type]


def build(body: dict[str, Any], *, stream: bool = False, model: str = "claude-3-5-sonnet-20241022") -> dict[str, Any]:
    req = T.request(make_call(body, model), stream=stream)
    assert req.json_body is not None
    return dict(req.json_body)


def conversation() -> dict[str, Any]:
    """A tool round trip in OpenAI shape, with everything the translator maps."""
    return {
        "model": "claude-3-5-sonnet",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {"role": "user", "content": [
                {"type": "text", "text": "Here is a map."},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "image_url", "image_url": {"url": "https://example.com/map.jpg", "detail": "low"}},
            ]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
                {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}},
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "21C"}]},
            {"role": "user", "content": "Thanks, summarise."},
        ],
        "tools": [WEATHER_TOOL],
        "tool_choice": "auto",
        "stop": "END",
        "temperature": 0.3,
        "top_p": 0.9,
        "user": "user-42",
        "presence_penalty": 0.5,
        "unknown_field": True,
    }


# -- requests -------------------------------------------------------------------


def test_request_url_headers_and_no_mutation() -> None:
    body = conversation()
    before = copy.deepcopy(body)
    req = T.request(make_call(body), stream=True)
    T.request(make_call(body), stream=False)
    assert body == before
    assert req.url == "https://api.anthropic.com/v1/messages"
    assert req.headers["x-api-key"] == KEY and req.headers["anthropic-version"] == "2023-06-01"
    assert "Authorization" not in req.headers
    assert KEY not in repr(req)


def test_request_body_mapping() -> None:
    out = build(conversation(), stream=True)
    assert out["model"] == "claude-3-5-sonnet-20241022"
    assert out["system"] == [{"type": "text", "text": "You are terse."}, {"type": "text", "text": "Answer in French."}]
    assert out["stop_sequences"] == ["END"]
    assert (out["temperature"], out["top_p"], out["stream"]) == (0.3, 0.9, True)
    assert out["metadata"] == {"user_id": "user-42"}
    assert out["max_tokens"] == 8192
    assert out["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather for a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
    assert out["tool_choice"] == {"type": "auto"}
    # Anthropic rejects unknown fields: only mapped ones are sent.
    assert "unknown_field" not in out and "presence_penalty" not in out and "user" not in out


def test_messages_alternate_with_tool_blocks() -> None:
    messages = build(conversation())["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    first, assistant, last = messages
    assert first["content"] == [
        {"type": "text", "text": "Weather in Paris and Rome?"},
        {"type": "text", "text": "Here is a map."},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/map.jpg"}},
    ]
    assert assistant["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Rome"}},
    ]
    assert last["content"] == [
        {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
        {"type": "tool_result", "tool_use_id": "call_2", "content": [{"type": "text", "text": "21C"}]},
        {"type": "text", "text": "Thanks, summarise."},
    ]


def test_tool_results_are_moved_before_text_in_their_turn() -> None:
    body = {
        "messages": [
            {"role": "user", "content": "go"},
            {"role": "assistant", "tool_calls": [
                {"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "user", "content": "text first"},
            {"role": "tool", "tool_call_id": "t1", "content": "done"},
        ]
    }
    last = build(body)["messages"][-1]["content"]
    assert [b["type"] for b in last] == ["tool_result", "text"]


def test_single_plain_system_is_a_string_and_cache_control_is_kept() -> None:
    body = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]}
    assert build(body)["system"] == "Be brief."
    cached = {"type": "text", "text": "Long context", "cache_control": {"type": "ephemeral"}}
    body = {"messages": [{"role": "system", "content": [cached]}, {"role": "user", "content": "hi"}]}
    assert build(body)["system"] == [cached]


def test_empty_texts_and_empty_messages_are_dropped() -> None:
    body = {"messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": [{"type": "text", "text": ""}, {"type": "text", "text": "again"}]},
    ]}
    assert build(body)["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "text", "text": "again"}]}
    ]


@pytest.mark.parametrize(
    ("body_extra", "expected_max"),
    [
        ({}, 8192),
        ({"max_tokens": 100}, 100),
        ({"max_tokens": 100, "max_completion_tokens": 50}, 50),
    ],
)
def test_max_tokens(body_extra: dict[str, Any], expected_max: int) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], **body_extra}
    assert build(body)["max_tokens"] == expected_max


@pytest.mark.parametrize(
    ("model", "expected"),
    [("claude-3-opus-20240229", 4096), ("claude-3-haiku-20240307", 4096), ("claude-sonnet-4-20250514", 8192),
     ("some-future-model", 4096)],
)
def test_default_max_tokens_per_model(model: str, expected: int) -> None:
    assert build({"messages": [{"role": "user", "content": "hi"}]}, model=model)["max_tokens"] == expected


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("none", None, {"type": "none"}),
        ("required", None, {"type": "any"}),
        ({"type": "function", "function": {"name": "get_weather"}}, None, {"type": "tool", "name": "get_weather"}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
    ],
)
def test_tool_choice(choice: Any, parallel: Any, expected: dict[str, Any]) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "tools": [WEATHER_TOOL], "tool_choice": choice}
    if parallel is not None:
        body["parallel_tool_calls"] = parallel
    assert build(body)["tool_choice"] == expected


def test_tool_without_parameters_gets_an_empty_schema() -> None:
    tool = {"type": "function", "function": {"name": "now"}}
    out = build({"messages": [{"role": "user", "content": "hi"}], "tools": [tool]})
    assert out["tools"] == [{"name": "now", "input_schema": {"type": "object", "properties": {}}}]


@pytest.mark.parametrize(
    ("messages_or_body", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": "hi"}, "messages"),
        ({"messages": [{"role": "function", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}, "messages[0].content[0]"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}]},
         "messages[0].content[0]"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png,abc"}}]}]},
         "messages[0].content[0]"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/bmp;base64,AA"}}]}]},
         "messages[0].content[0]"),
        ({"messages": [{"role": "assistant", "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{broken"}}]}]},
         "messages[0].tool_calls[0].function.arguments"),
        ({"messages": [{"role": "assistant", "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]}]},
         "messages[0].tool_calls[0].function.arguments"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
        ({"messages": [{"role": "user", "content": "hi"}], "n": 3}, "n"),
        ({"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "code_interpreter"}]}, "tools[0]"),
        ({"messages": [{"role": "user", "content": "hi"}], "tools": [WEATHER_TOOL], "tool_choice": "sometimes"},
         "tool_choice"),
        ({"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_object"}},
         "response_format"),
    ],
)
def test_bad_inputs_are_invalid_requests(messages_or_body: dict[str, Any], param: str) -> None:
    with pytest.raises(ProviderFailure) as info:
        T.request(make_call(messages_or_body), stream=False)
    assert info.value.kind is ErrorKind.INVALID_REQUEST and info.value.param == param
    assert not info.value.retryable


@pytest.mark.parametrize("kind", ["embedding", "completion"])
def test_embeddings_and_legacy_completions_are_refused(kind: str) -> None:
    with pytest.raises(ProviderFailure) as info:
        T.request(make_call({"input": "x", "prompt": "x"}, kind=kind), stream=False)
    assert info.value.kind is ErrorKind.INVALID_REQUEST


# -- responses --------------------------------------------------------------------


def test_response_text_tools_and_usage() -> None:
    body = {
        "id": "msg_1",
        "type": "message",
        "model": "claude-3-5-sonnet-20241022",
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "s"},
            {"type": "text", "text": "Checking "},
            {"type": "text", "text": "now."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
        ],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 10, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 20,
                  "output_tokens": 7},
    }
    out = T.response(200, body, make_call({}))
    choice = out["choices"][0]
    assert out["object"] == "chat.completion" and out["id"] == "msg_1"
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Checking now."
    call = choice["message"]["tool_calls"][0]
    assert call["id"] == "toolu_1" and call["function"]["name"] == "get_weather"
    assert orjson.loads(call["function"]["arguments"]) == {"city": "Paris"}
    assert out["usage"]["prompt_tokens"] == 130 and out["usage"]["completion_tokens"] == 7
    assert out["usage"]["total_tokens"] == 137
    assert Usage.from_openai(out["usage"]) == Usage(130, 7, cache_read_tokens=100, cache_write_tokens=20)


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("tool_use", "tool_calls"),
     ("refusal", "content_filter")],
)
def test_stop_reasons(stop_reason: str, finish: str) -> None:
    body = {"id": "m", "content": [{"type": "text", "text": "x"}], "stop_reason": stop_reason, "usage": {}}
    out = T.response(200, body, make_call({}))
    assert out["choices"][0]["finish_reason"] == finish
    assert "tool_calls" not in out["choices"][0]["message"]


# -- streams ----------------------------------------------------------------------


def ev(name: str, data: dict[str, Any]) -> SSEEvent:
    return SSEEvent(name, orjson.dumps({"type": name, **data}).decode())


STREAM = [
    ev("message_start", {"message": {"id": "msg_9", "model": "claude-x", "usage": {
        "input_tokens": 12, "cache_read_input_tokens": 3, "output_tokens": 1}}}),
    ev("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
    ev("ping", {}),
    ev("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "Hi"}}),
    ev("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": " there"}}),
    ev("content_block_stop", {"index": 0}),
    ev("content_block_start", {"index": 1, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}}),
    ev("content_block_delta", {"index": 1, "delta": {"type": "input_json_delta", "partial_json": '{"a"'}}),
    ev("content_block_delta", {"index": 1, "delta": {"type": "input_json_delta", "partial_json": ": 1}"}}),
    ev("content_block_stop", {"index": 1}),
    ev("message_delta", {"delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}}),
    ev("message_stop", {}),
]


def run(events: list[SSEEvent]) -> tuple[Any, list[dict[str, Any]]]:
    state = T.stream_events(make_call({}))
    out: list[dict[str, Any]] = []
    for event in events:
        out.extend(state.feed(event))
    return state, out


def test_stream_full_sequence() -> None:
    state, out = run(STREAM)
    assert state.done and state.finish() == []
    deltas = [c["choices"][0]["delta"] for c in out[:-1]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert "".join(d.get("content") or "" for d in deltas) == "Hi there"
    tool_deltas = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert tool_deltas[0] == {"index": 0, "id": "toolu_1", "type": "function", "function": {"name": "f", "arguments": ""}}
    assert "".join(t["function"]["arguments"] for t in tool_deltas) == '{"a": 1}'
    assert out[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert out[-1]["choices"] == [] and out[-1]["usage"]["prompt_tokens"] == 15
    assert out[-1]["usage"]["completion_tokens"] == 9
    assert out[-1]["usage"]["prompt_tokens_details"] == {"cached_tokens": 3}
    assert {c["id"] for c in out} == {"msg_9"} and {c["model"] for c in out} == {"claude-x"}
    assert {c["object"] for c in out} == {"chat.completion.chunk"}


def test_stream_cut_before_message_stop_raises() -> None:
    state, _ = run(STREAM[:-2])
    with pytest.raises(ProviderFailure) as info:
        state.finish()
    assert info.value.kind is ErrorKind.PROVIDER_ERROR


@pytest.mark.parametrize(
    ("error_type", "kind", "switch_key"),
    [("overloaded_error", ErrorKind.PROVIDER_ERROR, False), ("rate_limit_error", ErrorKind.RATE_LIMIT_EXCEEDED, True),
     ("invalid_request_error", ErrorKind.BAD_REQUEST, False)],
)
def test_stream_error_event_raises(error_type: str, kind: ErrorKind, switch_key: bool) -> None:
    events = [*STREAM[:4], ev("error", {"error": {"type": error_type, "message": "Overloaded"}})]
    with pytest.raises(ProviderFailure) as info:
        run(events)
    assert info.value.kind is kind and info.value.switch_key is switch_key


@pytest.mark.parametrize("data", ["{oops", "[]"])
def test_stream_malformed_event_raises(data: str) -> None:
    with pytest.raises(ProviderFailure):
        run([STREAM[0], SSEEvent("content_block_delta", data)])


def test_json_delta_for_unknown_block_raises() -> None:
    with pytest.raises(ProviderFailure):
        run([STREAM[0], ev("content_block_delta", {"index": 5, "delta": {"type": "input_json_delta", "partial_json": "{"}})])


def test_unknown_events_are_ignored_and_thinking_is_reasoning_content() -> None:
    events = [
        STREAM[0],
        ev("content_block_start", {"index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
        ev("content_block_delta", {"index": 0, "delta": {"type": "thinking_delta", "thinking": "hmm"}}),
        ev("some_future_event", {"x": 1}),
    ]
    _, out = run(events)
    assert len(out) == 2  # the role chunk, then the thinking as OpenAI-compatible reasoning_content
    assert out[1]["choices"][0]["delta"] == {"reasoning_content": "hmm"}


# -- errors -----------------------------------------------------------------------


def anthropic_error(kind: str, message: str) -> bytes:
    return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}})


def test_errors() -> None:
    bad = T.error(400, anthropic_error("invalid_request_error", "messages: field required"), {})
    assert (bad.kind, bad.http_status, bad.message, bad.code) == (
        ErrorKind.BAD_REQUEST, 400, "messages: field required", "invalid_request_error")
    auth = T.error(401, anthropic_error("authentication_error", "invalid x-api-key"), {})
    assert auth.kind is ErrorKind.PROVIDER_ERROR and auth.http_status == 502 and auth.retryable
    limited = T.error(429, anthropic_error("rate_limit_error", "slow down"), {"retry-after": "4"})
    assert limited.switch_key and limited.retry_after_s == 4
    overloaded = T.error(529, anthropic_error("overloaded_error", "Overloaded"), {})
    assert overloaded.kind is ErrorKind.PROVIDER_ERROR and overloaded.retryable
    garbage = T.error(413, b"request entity too large", {})
    assert garbage.kind is ErrorKind.REQUEST_TOO_LARGE and garbage.message == "request entity too large"


def test_models_response_mapping() -> None:
    body = {"data": [{"type": "model", "id": "claude-x", "created_at": "2024-10-22T00:00:00Z"}]}
    out = T.models_response(body)
    assert out == {"object": "list", "data": [{"id": "claude-x", "object": "model", "created": 1729555200,
                                             "owned_by": "anthropic"}]}
