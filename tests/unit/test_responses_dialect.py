"""Responses ↔ chat completions, both directions (dialects/responses), as pure functions."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from relay_server.api.responses_frames import ResponsesSSE, native_payload
from relay_server.dialects.responses.native import NativeIds
from relay_server.dialects.responses.output import from_chat
from relay_server.dialects.responses.request import (
    native_body,
    parse_turn,
    to_chat,
    truncate,
)
from relay_server.dialects.responses.stream import ChatToEvents
from relay_server.domain.provider import NativeEvent
from relay_server.errors import RelayError

TOOL = {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}, "strict": True}


def _chunk(delta: dict[str, Any], finish: str | None = None, usage: dict[str, Any] | None = None) -> dict[str, Any]:
    chunk: dict[str, Any] = {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    if usage is not None:
        chunk = {"id": "c", "object": "chat.completion.chunk", "choices": [], "usage": usage}
    return chunk


def test_request_fields_map_to_the_chat_form() -> None:
    body = {
        "model": "gpt-4o-mini", "instructions": "Be brief.", "input": "Hi", "tools": [TOOL],
        "tool_choice": {"type": "function", "name": "get_weather"}, "parallel_tool_calls": False,
        "max_output_tokens": 50, "temperature": 0.5, "top_p": 0.9, "user": "u1", "store": True, "metadata": {"a": "b"},
        "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}, "strict": True}},
        "reasoning": {"effort": "low"}, "stream": True, "truncation": "disabled",
    }  # fmt: skip
    original = copy.deepcopy(body)
    chat = to_chat(parse_turn(body))
    assert body == original, "translation never mutates the client's body"
    assert chat["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert chat["tools"] == [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}, "strict": True}}]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert chat["parallel_tool_calls"] is False and chat["max_completion_tokens"] == 50
    assert (chat["temperature"], chat["top_p"], chat["user"], chat["reasoning_effort"]) == (0.5, 0.9, "u1", "low")
    assert chat["response_format"] == {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}, "strict": True}}
    assert chat["stream"] is True and chat["stream_options"] == {"include_usage": True}
    assert "metadata" not in chat and "store" not in chat, "Relay's own state stays with Relay"


def test_items_become_messages_and_tool_calls() -> None:
    history = [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Let me check.", "annotations": []}]},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{}"},
        {"type": "function_call", "call_id": "call_2", "name": "get_weather", "arguments": "{\"c\":1}"},
        {"type": "reasoning", "id": "rs_1", "summary": []},
    ]
    turn = parse_turn({"model": "m", "previous_response_id": "resp_1", "input": [
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
        {"type": "function_call_output", "call_id": "call_2", "output": "rain"},
        {"role": "user", "content": [{"type": "input_text", "text": "And "}, {"type": "input_image", "image_url": "data:image/png;base64,AA"}]},
    ]})  # fmt: skip
    messages = to_chat(turn, history)["messages"]
    assert messages[0] == {"role": "user", "content": "Weather?"}
    assert messages[1]["role"] == "assistant" and messages[1]["content"] == "Let me check."
    assert [c["id"] for c in messages[1]["tool_calls"]] == ["call_1", "call_2"]
    assert messages[2:4] == [{"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                             {"role": "tool", "tool_call_id": "call_2", "content": "rain"}]  # fmt: skip
    assert messages[4]["content"][1] == {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}
    assert len(messages) == 5, "reasoning items have no chat form"


def test_native_body_inlines_the_conversation_without_relay_state() -> None:
    turn = parse_turn({"model": "m", "input": "Next", "previous_response_id": "resp_1", "store": True, "metadata": {"a": "b"},
                       "include": ["reasoning.encrypted_content"], "some_new_field": 1})  # fmt: skip
    history = [{"id": "msg_1", "type": "message", "role": "user", "content": [{"type": "input_text", "text": "First"}]}]
    body = native_body(turn, history)
    assert body["store"] is False and "previous_response_id" not in body and "metadata" not in body
    assert body["some_new_field"] == 1 and body["include"] == ["reasoning.encrypted_content"]
    assert [i["content"][0]["text"] for i in body["input"]] == ["First", "Next"]
    assert all("id" not in i for i in body["input"]), "Relay's item ids mean nothing upstream"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "x"}, "model"),
        ({"model": "m"}, "input"),
        ({"model": "m", "input": "x", "tools": [{"type": "web_search"}, {"type": "code_interpreter"}]}, "tools"),
        ({"model": "m", "input": "x", "tools": [{"type": "function"}]}, "tools[0].name"),
        ({"model": "m", "input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
        ({"model": "m", "input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
        ({"model": "m", "input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id"),
        ({"model": "m", "input": "x", "store": False, "background": True}, "background"),
        ({"model": "m", "input": "x", "truncation": "sometimes"}, "truncation"),
        ({"model": "m", "input": "x", "metadata": {"a": 1}}, "metadata"),
        ({"model": "m", "input": "x", "conversation": "conv_123"}, "conversation"),
        ({"model": "m", "input": "x", "conversation": {"id": "conv_123"}}, "conversation"),
    ],
)
def test_bad_requests_name_the_parameter(body: dict[str, Any], param: str) -> None:
    with pytest.raises(RelayError) as caught:
        parse_turn(body)
    assert caught.value.param == param and caught.value.http_status == 400


def test_built_in_tools_are_named_in_the_refusal() -> None:
    with pytest.raises(RelayError) as caught:
        parse_turn({"model": "m", "input": "x", "tools": [{"type": "web_search"}, {"type": "mcp"}, TOOL]})
    assert "mcp" in caught.value.message and "web_search" in caught.value.message


def test_chat_chunks_become_the_semantic_event_sequence() -> None:
    turn = parse_turn({"model": "m", "input": "x", "stream": True})
    events = ChatToEvents(turn, "resp_1", created_at=1.0, model="m")
    out = []
    for chunk in [_chunk({"role": "assistant", "content": ""}), _chunk({"content": "Hel"}), _chunk({"content": "lo"}),
                  _chunk({"tool_calls": [{"index": 0, "id": "call_9", "function": {"name": "f", "arguments": "{\"a\""}}]}),
                  _chunk({"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}), _chunk({}, "tool_calls"),
                  _chunk({}, usage={"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7})]:  # fmt: skip
        out.extend(events.chunk(chunk))
    out.extend(events.end())
    assert [e["type"] for e in out] == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.content_part.added", "response.output_text.delta", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done", "response.completed",
    ]  # fmt: skip
    assert [e["sequence_number"] for e in out] == list(range(len(out)))
    final = out[-1]["response"]
    assert final["status"] == "completed" and final["usage"]["total_tokens"] == 7
    message, call = final["output"]
    assert message["content"][0]["text"] == "Hello" and message["id"].startswith("msg_")
    assert (call["call_id"], call["arguments"], call["status"]) == ("call_9", '{"a":1}', "completed")
    assert out[2]["item"]["status"] == "in_progress" and out[8]["item"]["status"] == "completed"


def test_a_length_finish_is_incomplete_and_a_failure_is_failed() -> None:
    turn = parse_turn({"model": "m", "input": "x"})
    events = ChatToEvents(turn, "resp_1", created_at=1.0, model="m")
    events.chunk(_chunk({"content": "Hi"}, "length"))
    last = events.end()[-1]
    assert last["type"] == "response.incomplete" and last["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    failing = ChatToEvents(turn, "resp_2", created_at=1.0, model="m")
    failing.chunk(_chunk({"content": "Hi"}))
    failed = failing.fail("provider_error", "boom")[-1]
    assert failed["type"] == "response.failed" and failed["response"]["error"] == {"code": "provider_error", "message": "boom"}
    assert failed["response"]["output"][0]["status"] == "incomplete"


def test_a_chat_completion_becomes_a_response_object() -> None:
    turn = parse_turn({"model": "m", "input": "x", "metadata": {"k": "v"}})
    completion = {"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": "Sure.",
                  "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}}],
                  "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7, "prompt_tokens_details": {"cached_tokens": 1}}}  # fmt: skip
    response = from_chat(turn, "resp_1", completion, created_at=1.0, model="m")
    assert response["id"] == "resp_1" and response["status"] == "completed" and response["metadata"] == {"k": "v"}
    assert [o["type"] for o in response["output"]] == ["message", "function_call"]
    assert response["usage"]["input_tokens_details"]["cached_tokens"] == 1 and response["usage"]["total_tokens"] == 7


def test_native_events_get_relay_ids_consistently() -> None:
    turn = parse_turn({"model": "gpt-4o-mini", "input": "x", "previous_response_id": "resp_prev", "metadata": {"k": "v"}})
    ids = NativeIds(turn, "resp_relay", model="gpt-4o-mini", created_at=1.0)
    added = ids.event({"type": "response.output_item.added", "sequence_number": 2, "output_index": 0,
                       "item": {"id": "msg_up", "type": "message", "content": []}})  # fmt: skip
    delta = ids.event({"type": "response.output_text.delta", "sequence_number": 3, "item_id": "msg_up", "delta": "Hi"})
    done = ids.event({"type": "response.output_item.done", "sequence_number": 4, "output_index": 0,
                      "item": {"id": "msg_up", "type": "message", "content": [{"type": "output_text", "text": "Hi"}]}})  # fmt: skip
    completed = ids.event({"type": "response.completed", "sequence_number": 5, "response": {
        "id": "resp_up", "store": False, "previous_response_id": None, "output": [{"id": "msg_up", "type": "message"}]}})
    relay_id = added["item"]["id"]
    assert relay_id.startswith("msg_") and relay_id != "msg_up"
    assert delta["item_id"] == done["item"]["id"] == completed["response"]["output"][0]["id"] == relay_id
    final = completed["response"]
    assert (final["id"], final["store"], final["previous_response_id"], final["metadata"]) == ("resp_relay", True, "resp_prev", {"k": "v"})
    assert ids.failed("provider_error", "x")["sequence_number"] == 6


def test_the_encoder_parses_native_event_bytes() -> None:
    turn = parse_turn({"model": "m", "input": "x", "stream": True})
    data = {"type": "response.created", "sequence_number": 0, "response": {"id": "resp_up", "output": []}}
    raw = b"event: response.created\ndata: " + orjson.dumps(data) + b"\n\n"
    assert native_payload(raw) == data
    frames = ResponsesSSE(turn, "resp_relay", model="m").item(NativeEvent(raw))
    assert orjson.loads(frames[0].data.split(b"data: ", 1)[1])["response"]["id"] == "resp_relay"


def test_auto_truncation_drops_the_oldest_exchanges_and_never_orphans_a_tool_result() -> None:
    def user(text: str) -> dict[str, Any]:
        return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}

    history = [
        user("old question"),
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "x" * 50},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "old answer"}]},
        user("recent question"),
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "recent answer"}]},
    ]

    def fits(chat: dict[str, Any]) -> bool:
        return len(chat["messages"]) <= 3

    auto = parse_turn({"model": "m", "input": "now", "truncation": "auto", "previous_response_id": "resp_1"})
    kept = truncate(auto, history, fits)
    assert kept == history[4:], "whole exchanges are dropped, the kept history starts at a user message"
    assert to_chat(auto, kept)["messages"][0] == {"role": "user", "content": "recent question"}
    disabled = parse_turn({"model": "m", "input": "now", "previous_response_id": "resp_1"})
    assert truncate(disabled, history, fits) == history
