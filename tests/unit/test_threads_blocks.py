"""Thread content blocks, history → prompt, reply → blocks, cursors and reply events."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from relay_server.errors import RelayError
from relay_server.threads import cursor as cursors
from relay_server.threads import events
from relay_server.threads.blocks import prompt_messages, reply_blocks, validate_blocks, visible


def test_user_and_tool_blocks_are_normalised() -> None:
    blocks = validate_blocks("user", [{"type": "text", "text": "hi", "extra": 1},
                                      {"type": "image", "url": "https://x/y.png"}])
    assert blocks == [{"type": "text", "text": "hi"}, {"type": "image", "url": "https://x/y.png", "detail": "auto"}]
    result = validate_blocks("tool", [{"type": "tool_result", "tool_use_id": "c1", "content": [{"type": "text", "text": "ok"}]}])
    assert result == [{"type": "tool_result", "tool_use_id": "c1", "content": [{"type": "text", "text": "ok"}], "is_error": False}]


@pytest.mark.parametrize(("role", "blocks", "param"), [
    ("assistant", [{"type": "text", "text": "x"}], "role"),
    ("user", [], "content"),
    ("user", ["text"], "content[0]"),
    ("user", [{"type": "tool_use", "id": "a", "name": "b"}], "content[0]"),
    ("user", [{"type": "text", "text": ""}], "content[0]"),
    ("user", [{"type": "text", "text": "ok"}, {"type": "image", "url": "file:///etc/passwd"}], "content[1]"),
    ("user", [{"type": "image", "url": "https://x", "detail": "ultra"}], "content[0]"),
    ("tool", [{"type": "text", "text": "x"}], "content[0]"),
    ("tool", [{"type": "tool_result", "tool_use_id": "", "content": "x"}], "content[0]"),
    ("tool", [{"type": "tool_result", "tool_use_id": "c", "content": 5}], "content[0]"),
    ("tool", [{"type": "tool_result", "tool_use_id": "c", "content": "x", "is_error": "no"}], "content[0]"),
])
def test_bad_blocks_are_422_naming_the_block(role: str, blocks: list, param: str) -> None:
    with pytest.raises(RelayError) as caught:
        validate_blocks(role, blocks)
    assert caught.value.http_status == 422 and caught.value.param == param


def test_history_becomes_openai_messages_and_orphan_tool_results_are_dropped() -> None:
    use = {"type": "tool_use", "id": "c1", "name": "w", "input": {"city": "Paris"}}
    history = [
        ("tool", [{"type": "tool_result", "tool_use_id": "c0", "content": "orphan"}]),  # its call fell out of the window
        ("user", [{"type": "text", "text": "a"}, {"type": "image", "url": "https://i", "detail": "low"}]),
        ("assistant", [use]),
        ("tool", [{"type": "tool_result", "tool_use_id": "c1", "content": [{"type": "text", "text": "sunny"}]}]),
        ("assistant", [{"type": "text", "text": "It is sunny."}]),
    ]
    assert prompt_messages(history) == [
        {"role": "user", "content": [{"type": "text", "text": "a"},
                                     {"type": "image_url", "image_url": {"url": "https://i", "detail": "low"}}]},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "w", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "assistant", "content": "It is sunny."},
    ]
    assert visible(history[2][1], include_tools=False) == []


def test_reply_blocks_keep_tool_calls_even_when_truncated() -> None:
    calls = [{"id": "c1", "function": {"name": "w", "arguments": '{"city": "Par'}},
             {"id": "c2", "function": {"name": "v", "arguments": "[1]"}}]
    assert reply_blocks("", calls) == [
        {"type": "tool_use", "id": "c1", "name": "w", "input": {"_raw": '{"city": "Par'}},
        {"type": "tool_use", "id": "c2", "name": "v", "input": {"_value": [1]}},
    ]
    assert reply_blocks("hi", []) == [{"type": "text", "text": "hi"}]


def test_message_cursors_only_continue_their_own_listing() -> None:
    cursor = cursors.message_cursor("thr_1", 40, False, False)
    assert cursors.parse_message_cursor(cursor, "thr_1", False, False) == 40
    for args in (("thr_2", False, False), ("thr_1", True, False), ("thr_1", False, True)):
        with pytest.raises(RelayError):
            cursors.parse_message_cursor(cursor, *args)
    for junk in ("", "!!", "e30", cursor[:-3], cursors.thread_cursor(datetime.now(UTC), "thr_1", None)):
        with pytest.raises(RelayError) as caught:
            cursors.parse_message_cursor(junk, "thr_1", False, False)
        assert caught.value.http_status == 400 and caught.value.param == "cursor"


def test_thread_cursors_round_trip_and_bind_the_end_user() -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    cursor = cursors.thread_cursor(at, "thr_9", "eu1")
    assert cursors.parse_thread_cursor(cursor, "eu1") == (at, "thr_9")
    with pytest.raises(RelayError):
        cursors.parse_thread_cursor(cursor, None)


def test_events_frame_and_terminal_detection() -> None:
    delta = events.delta("msg_1", {"content": "Hi"})
    assert events.frame(7, delta) == b"id: 7\ndata: " + delta + b"\n\n"
    assert not events.is_terminal(delta) and not events.is_terminal(events.created({"id": "m"}, None))
    assert events.is_terminal(events.completed({"id": "m"})) and events.is_terminal(events.failed({"id": "m"}, {}))
    assert events.delta_of({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}) is None
    assert events.delta_of({"choices": [], "usage": {"total_tokens": 1}}) is None
    assert events.delta_of({"choices": [{"index": 0, "delta": {"content": "x"}}]}) == {"content": "x"}
    payloads = [events.created({}, None), events.delta("m", {"content": "Hel"}), events.delta("m", {"content": "lo"})]
    assert events.partial_blocks(payloads) == [{"type": "text", "text": "Hello"}]
    assert orjson.loads(events.failed({"id": "m"}, {"message": "x"}))["object"] == "thread.message.failed"
