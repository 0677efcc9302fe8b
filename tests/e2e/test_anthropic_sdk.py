"""The official ``anthropic`` SDK against Relay's Anthropic door, changing only ``base_url``:
test mode answers (deterministic, free), so these run against the shared e2e stack."""

from __future__ import annotations

import base64
import json
import uuid

import anthropic
import pytest
from anthropic import Anthropic

from tests.support.stack import RelayStack

pytestmark = pytest.mark.e2e

MODEL = "gpt-4o-mini"  # any catalog model: test mode answers every one through this door
WEATHER = {"name": "get_weather", "description": "Weather for a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
PNG = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000" "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)).decode()


@pytest.fixture
def claude(relay: RelayStack) -> Anthropic:
    return Anthropic(base_url=relay.base_url.removesuffix("/v1"), api_key=relay.test_key, max_retries=0, timeout=30)


def test_create_answers_a_message(claude: Anthropic) -> None:
    message = claude.messages.create(model=MODEL, max_tokens=64, system="Be brief.",
                                     messages=[{"role": "user", "content": "Hello"}])
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "text" and message.content[0].text
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    again = claude.messages.create(model=MODEL, max_tokens=64, system="Be brief.",
                                   messages=[{"role": "user", "content": "Hello"}])
    assert again.content[0].text == message.content[0].text  # test mode is deterministic


def test_stream_text_and_final_message(claude: Anthropic) -> None:
    with claude.messages.stream(model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "Hi"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.content[0].text == text
    assert final.usage.output_tokens > 0 and final.usage.input_tokens > 0
    assert final.stop_reason in ("end_turn", "max_tokens")


def test_x_api_key_and_bearer_both_authenticate(relay: RelayStack) -> None:
    base = relay.base_url.removesuffix("/v1")
    bearer = Anthropic(base_url=base, auth_token=relay.test_key, max_retries=0, timeout=30)
    assert bearer.messages.create(model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "Hi"}]).content


def test_tools_with_a_tool_result_round_trip(claude: Anthropic) -> None:
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    first = claude.messages.create(model=MODEL, max_tokens=256, tools=[WEATHER], messages=messages)
    assert first.stop_reason == "tool_use"
    [use] = [b for b in first.content if b.type == "tool_use"]
    assert use.name == "get_weather" and isinstance(use.input, dict) and use.id
    messages += [{"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "18 C, sunny"}]}]
    second = claude.messages.create(model=MODEL, max_tokens=64, tools=[WEATHER], messages=messages)
    assert second.stop_reason in ("end_turn", "max_tokens") and second.content[0].type == "text"

    with claude.messages.stream(model=MODEL, max_tokens=256, tools=[WEATHER],
                                messages=[{"role": "user", "content": "Weather in Oslo?"}]) as stream:
        final = stream.get_final_message()
    [streamed] = [b for b in final.content if b.type == "tool_use"]
    assert streamed.name == "get_weather" and isinstance(streamed.input, dict)
    assert final.stop_reason == "tool_use"


def test_images_are_accepted(claude: Anthropic) -> None:
    message = claude.messages.create(model=MODEL, max_tokens=32, messages=[{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "text", "text": "What is this?"}]}])
    assert message.content[0].text


def test_thinking_block_then_text_streamed_and_whole(claude: Anthropic) -> None:
    thinking = {"type": "enabled", "budget_tokens": 2048}
    whole = claude.messages.create(model=MODEL, max_tokens=256, thinking=thinking,
                                   messages=[{"role": "user", "content": "Think first."}])
    assert [b.type for b in whole.content] == ["thinking", "text"]
    assert whole.content[0].thinking and whole.content[1].text
    with claude.messages.stream(model=MODEL, max_tokens=256, thinking=thinking,
                                messages=[{"role": "user", "content": "Think first."}]) as stream:
        events = [e.type for e in stream]
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.content[0].thinking == whole.content[0].thinking
    assert final.content[1].text == whole.content[1].text  # the first text delta after thinking is kept
    assert events.count("message_start") == 1 and events[-1] == "message_stop"


def test_errors_raise_the_sdk_classes(relay: RelayStack, claude: Anthropic) -> None:
    base = relay.base_url.removesuffix("/v1")
    with pytest.raises(anthropic.AuthenticationError) as bad_key:
        Anthropic(base_url=base, api_key="rly_test_sk_nope", max_retries=0).messages.create(
            model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "Hi"}])
    assert bad_key.value.body["error"]["type"] == "authentication_error"
    with pytest.raises(anthropic.NotFoundError) as missing:
        claude.messages.create(model="no-such-model", max_tokens=8, messages=[{"role": "user", "content": "Hi"}])
    assert missing.value.body == {"type": "error", "error": {"type": "not_found_error", "message": missing.value.body["error"]["message"]}}
    with pytest.raises(anthropic.BadRequestError) as bad:
        claude.messages.create(model=MODEL, max_tokens=8, messages=[])
    assert bad.value.body["error"]["type"] == "invalid_request_error"


def test_count_tokens_is_an_estimate_and_says_so(claude: Anthropic) -> None:
    raw = claude.messages.with_raw_response.count_tokens(model=MODEL, messages=[{"role": "user", "content": "Hello there"}])
    assert raw.headers["x-relay-token-count"] == "estimated"
    assert raw.parse().input_tokens > 0


def test_models_in_anthropics_list_shape(claude: Anthropic, http) -> None:
    page = claude.models.list()
    ids = [m.id for m in page.data]
    assert MODEL in ids and all(m.type == "model" for m in page.data)
    assert page.data[0].created_at.tzinfo is not None
    plain = http.get("/models").json()  # without anthropic-version: the OpenAI list, unchanged
    assert plain["object"] == "list" and "has_more" not in plain
    raw = json.loads(http.get("/models", headers={"anthropic-version": "2023-06-01"}).text)
    assert set(raw) == {"data", "has_more", "first_id", "last_id"} and raw["first_id"] == raw["data"][0]["id"]
    one = claude.models.retrieve(MODEL)
    assert (one.type, one.id) == ("model", MODEL) and one.created_at.tzinfo is not None
    with pytest.raises(anthropic.NotFoundError):
        claude.models.retrieve("no-such-model")
    assert http.get(f"/models/{MODEL}").json()["object"] == "model"  # the OpenAI shape without the header


@pytest.mark.parametrize(("code", "error_class", "status", "type_"), [
    ("spend_cap_exceeded", anthropic.PaymentRequiredError, 402, "billing_error"),
    ("rate_limit_exceeded", anthropic.RateLimitError, 429, "rate_limit_error"),
    ("no_provider_available", anthropic.OverloadedError, 529, "overloaded_error"),
])
def test_simulated_errors_raise_the_sdk_classes(claude: Anthropic, code: str, error_class: type, status: int, type_: str) -> None:
    with pytest.raises(error_class) as info:
        claude.messages.create(model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "Hi"}],
                               extra_headers={"x-relay-test-error": code})
    assert info.value.status_code == status and info.value.body["error"]["type"] == type_
    headers = info.value.response.headers
    if status == 402:
        assert headers["x-should-retry"] == "false"
    if status == 429:
        assert int(headers["retry-after"]) >= 1


def test_an_error_mid_stream_is_an_error_event_the_sdk_raises(claude: Anthropic) -> None:
    with pytest.raises(anthropic.APIStatusError) as info:
        with claude.messages.stream(model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "Hi"}],
                                    extra_headers={"x-relay-test-error": "provider_error", "x-relay-test-error-after": "2"}) as s:
            for _ in s.text_stream:
                pass
    assert info.value.body["error"]["type"] == "api_error"


def test_the_response_cache_replays_in_anthropics_shape(claude: Anthropic) -> None:
    ttl = {"x-relay-cache-ttl": "300"}
    messages = [{"role": "user", "content": f"Cache me {uuid.uuid4()}"}]
    first = claude.messages.with_raw_response.create(model=MODEL, max_tokens=32, messages=messages, extra_body={"temperature": 0}, extra_headers=ttl)
    assert first.headers["x-relay-cache"] == "miss"
    second = claude.messages.with_raw_response.create(model=MODEL, max_tokens=32, messages=messages, extra_body={"temperature": 0}, extra_headers=ttl)
    assert second.headers["x-relay-cache"] == "hit"
    assert second.parse().content[0].text == first.parse().content[0].text
    with claude.messages.with_streaming_response.create(model=MODEL, max_tokens=32, messages=messages, stream=True, extra_body={"temperature": 0},
                                                        extra_headers=ttl) as streamed:
        assert streamed.headers["x-relay-cache"] == "hit"
        lines = list(streamed.iter_lines())
    assert lines[0] == "event: message_start" and "event: message_stop" in lines
