"""The Responses door with a test key: the official openai SDK's responses.* → Envoy → Relay."""

from __future__ import annotations

import json
import time

import httpx
import openai
import psycopg
import pytest
from openai import OpenAI

from tests.support.stack import RelayStack

pytestmark = pytest.mark.e2e

WEATHER = [{"type": "function", "name": "get_weather", "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]  # fmt: skip


def test_create_returns_a_stored_response_with_relay_ids_and_usage(client: OpenAI) -> None:
    reply = client.responses.create(model="gpt-4o-mini", input="Tell me about gateways.", instructions="Be brief.",
                                    metadata={"team": "docs"})  # fmt: skip
    assert reply.object == "response" and reply.id.startswith("resp_")
    assert reply.status == "completed" and reply.model == "gpt-4o-mini"
    assert reply.output_text and reply.output[0].type == "message" and reply.output[0].id.startswith("msg_")
    assert reply.usage.input_tokens > 0 and reply.usage.output_tokens > 0
    assert reply.usage.total_tokens == reply.usage.input_tokens + reply.usage.output_tokens
    assert reply.instructions == "Be brief." and reply.metadata == {"team": "docs"} and reply.store is True

    again = client.responses.retrieve(reply.id)
    assert again.id == reply.id and again.output_text == reply.output_text and again.usage == reply.usage
    items = client.responses.input_items.list(reply.id)
    assert [i.type for i in items.data] == ["message"]
    assert items.data[0].role == "user" and items.data[0].content[0].text == "Tell me about gateways."


def test_stream_events_follow_the_sdk_sequence(client: OpenAI) -> None:
    with client.responses.stream(model="gpt-4o-mini", input="Tell me about gateways.") as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas and deltas == final.output_text
    item_ids = {e.item_id for e in events if hasattr(e, "item_id")}
    assert item_ids == {final.output[0].id}
    assert final.usage is not None and final.usage.output_tokens > 0
    assert client.responses.retrieve(final.id).output_text == final.output_text


def test_function_calling_loop_continues_with_previous_response_id(client: OpenAI) -> None:
    first = client.responses.create(model="gpt-4o-mini", input="What is the weather in Paris?", tools=WEATHER,
                                    tool_choice={"type": "function", "name": "get_weather"})  # fmt: skip
    calls = [o for o in first.output if o.type == "function_call"]
    assert calls and calls[0].name == "get_weather" and calls[0].id.startswith("fc_")
    assert "city" in json.loads(calls[0].arguments)
    second = client.responses.create(
        model="gpt-4o-mini", previous_response_id=first.id, tools=WEATHER,
        input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": '{"temp_c": 21}'}],
    )  # fmt: skip
    assert second.previous_response_id == first.id and second.status == "completed"
    assert second.output_text, "after a tool result the test model answers in text"
    # The rebuilt conversation is longer than the second request alone: the first turn was replayed.
    assert second.usage.input_tokens > first.usage.input_tokens


def test_streamed_function_call_events(client: OpenAI) -> None:
    with client.responses.stream(model="gpt-4o-mini", input="Weather in Oslo?", tools=WEATHER, tool_choice="required") as s:
        events = list(s)
        final = s.get_final_response()
    kinds = [e.type for e in events]
    assert "response.function_call_arguments.delta" in kinds and "response.function_call_arguments.done" in kinds
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    call = final.output[-1]
    assert call.type == "function_call" and done.arguments == call.arguments and json.loads(call.arguments)


def test_delete_then_retrieve_and_continue_are_404(client: OpenAI) -> None:
    reply = client.responses.create(model="gpt-4o-mini", input="Hello")
    client.responses.delete(reply.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(reply.id)
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.create(model="gpt-4o-mini", input="More", previous_response_id=reply.id)
    assert caught.value.body["param"] == "previous_response_id"


def test_store_false_keeps_nothing(client: OpenAI) -> None:
    reply = client.responses.create(model="gpt-4o-mini", input="Hello", store=False)
    assert reply.store is False and reply.output_text
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(reply.id)


def test_built_in_tools_are_refused_naming_them(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="gpt-4o-mini", input="Search", tools=[{"type": "web_search"}, {"type": "file_search",
                                "vector_store_ids": ["vs_1"]}])  # fmt: skip
    assert "web_search" in caught.value.message and "file_search" in caught.value.message
    assert caught.value.body["param"] == "tools"


def test_input_items_paginate_with_a_cursor(client: OpenAI) -> None:
    items = [{"role": "user", "content": f"message {i}"} for i in range(5)]
    reply = client.responses.create(model="gpt-4o-mini", input=items)
    first = client.responses.input_items.list(reply.id, limit=2, order="asc")
    assert [i.content[0].text for i in first.data] == ["message 0", "message 1"] and first.has_more
    rest = client.responses.input_items.list(reply.id, limit=10, order="asc", after=first.data[-1].id)
    assert [i.content[0].text for i in rest.data] == ["message 2", "message 3", "message 4"] and not rest.has_more
    every = [i.content[0].text for i in client.responses.input_items.list(reply.id, limit=2)]  # auto-paginates
    assert every == [f"message {i}" for i in reversed(range(5))]


def test_background_response_is_queued_then_completed(client: OpenAI) -> None:
    reply = client.responses.create(model="gpt-4o-mini", input="Hello in the background", background=True)
    assert reply.status == "queued" and reply.background is True
    deadline = time.monotonic() + 20
    while (current := client.responses.retrieve(reply.id)).status in ("queued", "in_progress"):
        assert time.monotonic() < deadline, "the background response never finished"
        time.sleep(0.05)
    assert current.status == "completed" and current.output_text
    # A finished response is not cancelled; the call answers it as it is.
    assert client.responses.cancel(reply.id).status == "completed"


def test_cancel_refuses_a_foreground_response(client: OpenAI) -> None:
    reply = client.responses.create(model="gpt-4o-mini", input="Hello")
    with pytest.raises(openai.BadRequestError):
        client.responses.cancel(reply.id)


def test_errors_are_openai_shaped(relay: RelayStack, http: httpx.Client) -> None:
    missing = http.post("/responses", json={"input": "Hello"})
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "model"
    unknown = http.post("/responses", json={"model": "no-such-model", "input": "Hello"})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
    bad_key = httpx.post(f"{relay.base_url}/responses", json={"model": "gpt-4o-mini", "input": "Hi"},
                         headers={"authorization": "Bearer rly_test_sk_nope"})  # fmt: skip
    assert bad_key.status_code == 401 and bad_key.json()["error"]["code"] == "invalid_api_key"
    bad_type = http.post("/responses", json={"model": "gpt-4o-mini", "input": [{"type": "computer_call"}]})
    assert bad_type.status_code == 400 and bad_type.json()["error"]["param"] == "input[0].type"


def test_request_log_records_the_door(relay: RelayStack, client: OpenAI) -> None:
    raw = client.responses.with_raw_response.create(model="gpt-4o-mini", input="Log me")
    request_id = raw.headers["x-request-id"]
    deadline = time.monotonic() + 10
    with psycopg.connect(relay.db.owner_dsn) as conn:
        while (row := conn.execute("SELECT door, status, total_tokens FROM requests WHERE id = %s", (request_id,)).fetchone()) is None:
            assert time.monotonic() < deadline, "the request was never logged"
            time.sleep(0.05)
            conn.rollback()
    assert row[0] == "responses" and row[1] == "success" and row[2] > 0


def test_truncation_auto_keeps_a_conversation_that_fits(client: OpenAI) -> None:
    first = client.responses.create(model="gpt-4o-mini", input="Remember the word teal.")
    second = client.responses.create(model="gpt-4o-mini", input="Which word?", previous_response_id=first.id, truncation="auto")
    plain = client.responses.create(model="gpt-4o-mini", input="Which word?", previous_response_id=first.id)
    assert second.truncation == "auto" and second.usage.input_tokens == plain.usage.input_tokens > first.usage.input_tokens


def test_sse_frames_are_exact_event_and_data_pairs(http: httpx.Client) -> None:
    with http.stream("POST", "/responses", json={"model": "gpt-4o-mini", "input": "hi", "stream": True}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-request-id"].startswith("req_") and "x-ratelimit-limit-requests" in response.headers
        raw = b"".join(response.iter_bytes())
    frames = raw.split(b"\n\n")
    assert frames[-1] == b""
    for number, frame in enumerate(frames[:-1]):
        head, data = frame.split(b"\n", 1)
        event = json.loads(data.removeprefix(b"data: "))
        assert head == b"event: " + event["type"].encode() and event["sequence_number"] == number
    assert json.loads(frames[-2].split(b"\n", 1)[1][6:])["type"] == "response.completed"
    assert b"[DONE]" not in raw and b"grpc" not in raw


def test_test_mode_errors_before_and_after_the_first_event(client: OpenAI) -> None:
    with pytest.raises(openai.RateLimitError):
        client.responses.create(model="gpt-4o-mini", input="Hi", extra_headers={"x-relay-test-error": "rate_limit_exceeded"})
    headers = {"x-relay-test-error": "provider_error", "x-relay-test-error-after": "3"}
    with client.responses.stream(model="gpt-4o-mini", input="Tell me a long story.", extra_headers=headers) as stream:
        events = list(stream)
    assert events[0].type == "response.created" and events[-1].type == "response.failed"
    assert events[-1].response.error.code == "provider_error"
    assert "response.completed" not in [e.type for e in events]


def test_the_async_client_streams_and_continues(relay: RelayStack) -> None:
    import asyncio

    from openai import AsyncOpenAI

    async def run() -> tuple[str, str]:
        async with AsyncOpenAI(base_url=relay.base_url, api_key=relay.test_key, max_retries=0, timeout=30) as client:
            async with client.responses.stream(model="gpt-4o-mini", input="Hello async") as stream:
                final = await stream.get_final_response()
            follow = await client.responses.create(model="gpt-4o-mini", input="And?", previous_response_id=final.id)
            return final.output_text, follow.previous_response_id or ""

    text, previous = asyncio.run(run())
    assert text and previous.startswith("resp_")
