"""The Anthropic door in front of live providers (fakes speaking the real wire formats over
loopback): native passthrough byte for byte to a Claude model, translated streams from
OpenAI, Mistral and Groq, usage and cache tokens billed, and errors in Anthropic's shape."""

from __future__ import annotations

import json
import time
from typing import Any

import anthropic
import httpx
import psycopg
import pytest
from anthropic import Anthropic

from tests.e2e.test_live_providers import MODELS, Live
from tests.e2e.test_live_providers import live as live  # noqa: F401 (the stack fixture, shared by import)
from tests.fakes import Fault, Reply

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

CLAUDE = MODELS["anthropic"]
TRANSLATED = {p: m for p, m in MODELS.items() if p != "anthropic"}
HELLO = [{"role": "user", "content": "Tell me about gateways."}]
TOOLS = [{"name": n, "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}
         for n in ("get_weather", "get_time")]
TWO_CALLS = Reply(text="", tool_calls=[("get_weather", {"city": "Paris", "unit": "celsius"}), ("get_time", {"city": "Oslo"})])


def claude_client(live: Live) -> Anthropic:
    return Anthropic(base_url=live.stack.base_url.removesuffix("/v1"), api_key=live.key, max_retries=0, timeout=30)


def raw_stream(live: Live, body: dict[str, Any], **headers: str) -> tuple[httpx.Response, bytes]:
    with httpx.Client(timeout=30) as http:
        with http.stream("POST", live.stack.base_url + "/messages", json={**body, "stream": True},
                         headers={"x-api-key": live.key, "anthropic-version": "2023-06-01", **headers}) as response:
            return response, b"".join(response.iter_bytes())


def events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for frame in filter(None, raw.split(b"\n\n")):
        name, data = frame.split(b"\n", 1)
        assert name.startswith(b"event: ") and data.startswith(b"data: "), frame
        parsed = json.loads(data[6:])
        assert parsed["type"] == name[7:].decode()
        out.append((parsed["type"], parsed))
    return out


def request_row(live: Live, request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    columns = ("door", "status", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "total_cost")
    while True:
        with psycopg.connect(live.db.owner_dsn) as conn:
            row = conn.execute(f"SELECT {', '.join(columns)} FROM requests WHERE id = %s", (request_id,)).fetchone()
        if row is not None or time.monotonic() > deadline:
            assert row is not None, f"no request row for {request_id}"
            return dict(zip(columns, row, strict=True))
        time.sleep(0.05)


# --- native passthrough ------------------------------------------------------------------------


def test_native_stream_is_the_providers_bytes_and_the_body_the_clients(live: Live) -> None:
    fake = live.fake("anthropic")
    fake.reply_with(Reply(text="Gateways route requests.", thinking="Let me think about it."))
    body = {"model": CLAUDE, "max_tokens": 300, "messages": HELLO, "thinking": {"type": "enabled", "budget_tokens": 1024},
            "metadata": {"user_id": "u-1"}, "top_k": 5}
    response, raw = raw_stream(live, body, **{"anthropic-beta": "interleaved-thinking-2025-05-14"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    assert raw == bytes(fake.sent_streams[-1])  # byte for byte
    sent = fake.last
    assert sent.body == {**body, "model": "claude-3-5-haiku-20241022", "stream": True}  # every field kept
    assert sent.headers["anthropic-beta"] == "interleaved-thinking-2025-05-14"
    assert sent.headers["anthropic-version"] == "2023-06-01"
    names = [name for name, _ in events(raw)]
    assert names[0] == "message_start" and names.count("message_start") == 1 and names[-1] == "message_stop"
    row = request_row(live, response.headers["x-request-id"])
    assert row["door"] == "anthropic" and row["status"] == "success"


def test_native_usage_on_message_delta_and_cache_tokens_are_billed(live: Live) -> None:
    fake = live.fake("anthropic")
    # Within what Relay's own count makes plausible (a gross overstatement would be capped).
    fake.cache_read_tokens, fake.cache_write_tokens, fake.usage_on_delta = 300, 100, True
    try:
        response, raw = raw_stream(live, {"model": CLAUDE, "max_tokens": 100, "messages": HELLO})
    finally:
        fake.cache_read_tokens, fake.cache_write_tokens, fake.usage_on_delta = 0, 0, False
    [(_, delta)] = [e for e in events(raw) if e[0] == "message_delta"]
    fresh = delta["usage"]["input_tokens"]
    assert fresh > 0
    row = request_row(live, response.headers["x-request-id"])
    assert (row["cache_read_tokens"], row["cache_write_tokens"]) == (300, 100)
    assert row["input_tokens"] == fresh + 300 + 100
    assert row["output_tokens"] == delta["usage"]["output_tokens"]
    # claude-3-5-haiku: input 0.80, cache read 0.08, cache write 1.00, output 4.00 per 1M (provider cost).
    expected = (fresh * 0.80 + 300 * 0.08 + 100 * 1.00 + row["output_tokens"] * 4.00) / 1e6
    assert float(row["total_cost"]) == pytest.approx(expected, rel=1e-6)


def test_native_non_streamed_answer_with_the_sdk(live: Live) -> None:
    live.fake("anthropic").reply_with(TWO_CALLS)
    message = claude_client(live).messages.create(model=CLAUDE, max_tokens=200, messages=HELLO, tools=TOOLS)
    assert [b.type for b in message.content] == ["tool_use", "tool_use"]
    assert message.content[0].input == {"city": "Paris", "unit": "celsius"} and message.stop_reason == "tool_use"


def test_count_tokens_is_exact_from_anthropic_for_a_claude_model(live: Live) -> None:
    client = claude_client(live)
    fake = live.fake("anthropic")
    raw = client.messages.with_raw_response.count_tokens(model=CLAUDE, system="Be brief.", messages=HELLO)
    assert raw.headers["x-relay-token-count"] == "exact"
    # The fake counts words in system and messages (the role too): 2 + 1 + 4; the estimate would differ.
    assert raw.parse().input_tokens == 7
    assert fake.last.path == "/v1/messages/count_tokens" and fake.last.body["model"] == "claude-3-5-haiku-20241022"
    other = client.messages.with_raw_response.count_tokens(model=TRANSLATED["openai"], messages=HELLO)
    assert other.headers["x-relay-token-count"] == "estimated" and other.parse().input_tokens > 0


# --- translated providers ----------------------------------------------------------------------


@pytest.mark.parametrize("provider", sorted(TRANSLATED))
def test_translated_stream_event_order_and_usage(live: Live, provider: str) -> None:
    response, raw = raw_stream(live, {"model": TRANSLATED[provider], "max_tokens": 100, "messages": HELLO})
    assert response.status_code == 200
    seq = events(raw)
    names = [n for n, _ in seq]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[3:-3]) == {"content_block_delta"}
    text = "".join(e["delta"]["text"] for n, e in seq if n == "content_block_delta")
    assert text == "Hello from the fake provider, nice to meet you."
    delta = seq[-2][1]
    assert delta["delta"]["stop_reason"] == "end_turn"
    row = request_row(live, response.headers["x-request-id"])
    assert delta["usage"]["output_tokens"] == row["output_tokens"] > 0
    assert delta["usage"]["input_tokens"] == row["input_tokens"] > 0
    assert row["door"] == "anthropic"


@pytest.mark.parametrize("provider", sorted(TRANSLATED))
def test_translated_stream_keeps_several_tool_calls_apart(live: Live, provider: str) -> None:
    live.fake(provider).reply_with(TWO_CALLS)
    with claude_client(live).messages.stream(model=TRANSLATED[provider], max_tokens=200, messages=HELLO, tools=TOOLS) as s:
        kinds = [e.type for e in s]
        final = s.get_final_message()
    assert [(b.type, b.name, b.input) for b in final.content] == [
        ("tool_use", "get_weather", {"city": "Paris", "unit": "celsius"}), ("tool_use", "get_time", {"city": "Oslo"})]
    assert final.content[0].id != final.content[1].id and final.stop_reason == "tool_use"
    assert kinds.count("content_block_start") == 2 and kinds.count("content_block_stop") == 2
    sent = live.fake(provider).last.body
    assert [t["function"]["name"] for t in sent["tools"]] == ["get_weather", "get_time"]


@pytest.mark.parametrize("provider", sorted(TRANSLATED))
def test_translated_reasoning_is_a_thinking_block_followed_by_text(live: Live, provider: str) -> None:
    live.fake(provider).reply_with(Reply(text="Gateways route requests.", thinking="First, what is a gateway?"),
                                   Reply(text="Gateways route requests.", thinking="First, what is a gateway?"))
    _, raw = raw_stream(live, {"model": TRANSLATED[provider], "max_tokens": 100, "messages": HELLO})
    seq = events(raw)
    starts = [e["content_block"]["type"] for n, e in seq if n == "content_block_start"]
    assert starts == ["thinking", "text"]
    thinking = "".join(e["delta"].get("thinking", "") for n, e in seq if n == "content_block_delta" and e["index"] == 0)
    text = "".join(e["delta"].get("text", "") for n, e in seq if n == "content_block_delta" and e["index"] == 1)
    assert (thinking, text) == ("First, what is a gateway?", "Gateways route requests.")  # the first text delta kept
    stops = [e["index"] for n, e in seq if n == "content_block_stop"]
    assert stops == [0, 1]
    whole = claude_client(live).messages.create(model=TRANSLATED[provider], max_tokens=100, messages=HELLO)
    assert [(b.type, getattr(b, "thinking", None) or getattr(b, "text", None)) for b in whole.content] == [
        ("thinking", "First, what is a gateway?"), ("text", "Gateways route requests.")]


def test_a_tool_result_round_trip_reaches_openai_as_tool_messages(live: Live) -> None:
    messages = [*HELLO, {"role": "assistant", "content": [
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "toolu_b", "name": "get_time", "input": {"city": "Oslo"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_a", "content": "18 C"},
                                     {"type": "tool_result", "tool_use_id": "toolu_b", "content": [{"type": "text", "text": "09:00"}]},
                                     {"type": "text", "text": "Summarise."}]}]
    message = claude_client(live).messages.create(model=TRANSLATED["openai"], max_tokens=100, messages=messages, tools=TOOLS)
    assert message.content[0].type == "text"
    sent = live.fake("openai").last.body["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "tool", "user"]
    assert [c["id"] for c in sent[1]["tool_calls"]] == ["toolu_a", "toolu_b"]
    assert (sent[2]["tool_call_id"], sent[2]["content"], sent[3]["content"]) == ("toolu_a", "18 C", "09:00")


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_a_client_gone_mid_stream_is_billed_for_what_was_generated(live: Live, provider: str) -> None:
    fake = live.fake(provider)
    before = fake.disconnects
    body = {"model": MODELS[provider], "max_tokens": 4000, "stream": True,
            "messages": [{"role": "user", "content": "Go on forever [[fault:hang;chunk_delay=0.01]]"}]}
    with httpx.Client(timeout=30) as http:
        with http.stream("POST", live.stack.base_url + "/messages", json=body, headers={"x-api-key": live.key}) as response:
            request_id = response.headers["x-request-id"]
            lines = response.iter_lines()
            deltas = 0
            for line in lines:
                deltas += line == "event: content_block_delta"
                if deltas == 5:
                    break
    deadline = time.monotonic() + 10
    while fake.disconnects == before:
        assert time.monotonic() < deadline, "the provider never saw the client go away"
        time.sleep(0.02)
    row = request_row(live, request_id)
    assert row["door"] == "anthropic" and row["status"] == "cancelled"
    assert row["output_tokens"] >= 5 and float(row["total_cost"]) > 0


# --- errors ----------------------------------------------------------------------------------


def test_a_failure_mid_stream_is_an_anthropic_error_event(live: Live) -> None:
    body = {"model": TRANSLATED["groq"], "max_tokens": 100,
            "messages": [{"role": "user", "content": "Cut me short [[fault:disconnect_after=3]]"}]}
    response, raw = raw_stream(live, body)
    assert response.status_code == 200
    frames = [f for f in raw.split(b"\n\n") if f]
    assert frames[0].startswith(b"event: message_start\n")
    name, data = frames[-1].split(b"\n", 1)
    assert name == b"event: error"
    assert json.loads(data[6:])["error"]["type"] == "api_error"


def test_an_anthropic_error_event_mid_stream_ends_the_native_stream_in_band(live: Live) -> None:
    fake = live.fake("anthropic")
    body = {"model": CLAUDE, "max_tokens": 100, "messages": [{"role": "user", "content": "Hi [[fault:error_event_after=4]]"}]}
    response, raw = raw_stream(live, body)
    assert response.status_code == 200
    sent = bytes(fake.sent_streams[-1])
    frames = [f for f in raw.split(b"\n\n") if f]
    assert raw.startswith(sent) and len(frames) == sent.count(b"\n\n") + 1  # what Anthropic sent, then the error
    name, data = frames[-1].split(b"\n", 1)
    assert name == b"event: error" and json.loads(data[6:])["type"] == "error"
    assert request_row(live, response.headers["x-request-id"])["status"] == "error"


def test_every_key_rate_limited_upstream_is_a_529_overloaded_error(live: Live) -> None:
    live.fake("anthropic").inject(Fault(status=429, retry_after="7"))
    with pytest.raises(anthropic.OverloadedError) as overloaded:
        claude_client(live).messages.create(model=CLAUDE, max_tokens=10, messages=HELLO)
    assert overloaded.value.status_code == 529
    assert overloaded.value.body["error"]["type"] == "overloaded_error"
    assert int(overloaded.value.response.headers["retry-after"]) >= 1
