"""The Responses door with a live key: the openai SDK → Envoy → Relay → fake OpenAI (its own
``/v1/responses``, passed through natively), Anthropic and Mistral (through the chat form).

The fakes keep no state, so every continuation proves Relay rebuilt the conversation itself;
the OpenAI fake refuses a ``previous_response_id``, so it also proves Relay never forwards one."""

from __future__ import annotations

import json
from typing import Any

import openai
import psycopg
import pytest

from tests.e2e.test_live_providers import MODELS, TOOL_REPLY, Live, live, wait_until
from tests.fakes import Fault, Reply
from tests.fakes.faults import texts_in

STACK = live  # the live-provider stack fixture (module scope: this module gets its own stack)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

PROVIDERS = ("openai", "anthropic", "mistral")
WEATHER = [{"type": "function", "name": "get_weather", "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]  # fmt: skip
TEXT = "Hello from the fake provider, nice to meet you."


def upstream(live: Live, provider: str) -> list[Any]:
    path = {"openai": "/responses", "anthropic": "/messages", "mistral": "/chat/completions"}[provider]
    return [r for r in live.fake(provider).requests if r.path.endswith(path)]


def sent_texts(request: Any) -> str:
    body = request.body
    return " ".join(texts_in([body.get("input"), body.get("messages"), body.get("system"), body.get("instructions")]))


def no_upstream_ids(value: Any) -> None:
    assert "upstream" not in json.dumps(value), "an id of the provider reached the client"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_create_retrieve_input_items_delete(live: Live, provider: str) -> None:
    client = live.client()
    reply = client.responses.create(model=MODELS[provider], input="Tell me about gateways.", instructions="Be brief.")
    assert reply.status == "completed" and reply.output_text == TEXT and reply.id.startswith("resp_")
    assert reply.output[0].id.startswith("msg_") and reply.model == MODELS[provider]
    assert reply.usage.input_tokens > 0 and reply.usage.output_tokens > 0
    no_upstream_ids(reply.model_dump(warnings=False))
    if provider == "openai":
        sent = upstream(live, "openai")[-1].body
        assert sent["store"] is False and "previous_response_id" not in sent and sent["instructions"] == "Be brief."
    stored = client.responses.retrieve(reply.id)
    assert stored.output_text == TEXT and stored.usage == reply.usage
    assert [i.content[0].text for i in client.responses.input_items.list(reply.id)] == ["Tell me about gateways."]
    client.responses.delete(reply.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(reply.id)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_stream_with_the_sdk_event_helpers(live: Live, provider: str) -> None:
    client = live.client()
    with client.responses.stream(model=MODELS[provider], input="Tell me about gateways.") as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == TEXT
    assert final.output_text == TEXT and final.usage.output_tokens > 0
    assert {e.response.id for e in events if hasattr(e, "response")} == {final.id}
    no_upstream_ids([e.model_dump(warnings=False) for e in events])
    assert client.responses.retrieve(final.id).output_text == TEXT


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("stream", [False, True])
def test_function_calling_loop_with_previous_response_id(live: Live, provider: str, stream: bool) -> None:
    client = live.client()
    live.fake(provider).reply_with(TOOL_REPLY, Reply(text="It is 21 degrees in Paris."))
    if stream:
        with client.responses.stream(model=MODELS[provider], input="Weather in Paris?", tools=WEATHER) as s:
            first = s.get_final_response()
    else:
        first = client.responses.create(model=MODELS[provider], input="Weather in Paris?", tools=WEATHER)
    call = first.output[-1]
    assert call.type == "function_call" and call.name == "get_weather" and call.id.startswith("fc_")
    assert json.loads(call.arguments) == {"city": "Paris", "unit": "celsius"}
    second = client.responses.create(
        model=MODELS[provider], previous_response_id=first.id, tools=WEATHER,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": '{"temp_c": 21}'}],
    )  # fmt: skip
    assert second.output_text == "It is 21 degrees in Paris." and second.previous_response_id == first.id
    sent = upstream(live, provider)[-1]
    text = sent_texts(sent)
    assert "Weather in Paris?" in text and "temp_c" in text, "the first turn was rebuilt for the provider"
    assert call.call_id in json.dumps(sent.body), "the tool result answers the call the provider made"


def test_a_conversation_fails_over_to_another_provider_and_continues(live: Live) -> None:
    client = live.client()
    live.fake("mistral").reply_with(Reply(text="Gateways route requests."))
    first = client.responses.create(model="mistral-small", input="What does a gateway do?")
    assert first.output_text == "Gateways route requests."

    # Turn 2: Mistral is down; the fallback model on Anthropic gets the whole conversation.
    live.fake("mistral").inject(Fault(status=503))
    live.fake("anthropic").reply_with(Reply(text="They also meter usage."))
    before = len(upstream(live, "anthropic"))
    second = client.responses.create(model="mistral-small", input="What else?", previous_response_id=first.id,
                                     extra_headers={"x-relay-fallback-models": "claude-3-5-haiku"})  # fmt: skip
    assert second.output_text == "They also meter usage." and second.previous_response_id == first.id
    served = upstream(live, "anthropic")[before:]
    assert len(served) == 1
    assert [m["role"] for m in served[0].body["messages"]] == ["user", "assistant", "user"]
    assert "Gateways route requests." in sent_texts(served[0]) and "What else?" in sent_texts(served[0])

    # Turn 3 on OpenAI's own Responses API: the two earlier turns are inlined, whoever served them.
    third = client.responses.create(model="gpt-4o-mini", input="Summarise.", previous_response_id=second.id)
    assert third.output_text == TEXT
    sent = upstream(live, "openai")[-1].body
    roles = [(i.get("role"), "".join(p["text"] for p in i["content"])) for i in sent["input"]]
    assert roles == [("user", "What does a gateway do?"), ("assistant", "Gateways route requests."),
                     ("user", "What else?"), ("assistant", "They also meter usage."), ("user", "Summarise.")]  # fmt: skip
    assert [i.content[0].text for i in client.responses.input_items.list(third.id)] == ["Summarise."]


def test_a_native_stream_failing_before_output_fails_over(live: Live) -> None:
    fake = live.fake("openai")
    before = len(upstream(live, "openai"))
    fake.inject(Fault(status=500))
    with live.client().responses.stream(model="gpt-4o-mini", input="Hello") as stream:
        final = stream.get_final_response()
    assert final.output_text == TEXT
    assert len(upstream(live, "openai")) == before + 2, "the second pooled key served the retry"


def test_a_failure_mid_stream_is_response_failed_not_completed(live: Live) -> None:
    for provider in ("openai", "mistral"):
        live.fake(provider).inject(Fault(disconnect_after=5))
        with live.client().responses.stream(model=MODELS[provider], input="Hello") as stream:
            events = list(stream)
            with pytest.raises(RuntimeError):
                stream.get_final_response()
        assert events[-1].type == "response.failed", provider
        assert events[-1].response.error.code == "provider_error", provider
        failed = live.client().responses.retrieve(events[-1].response.id)
        assert failed.status == "failed", provider


def test_unknown_fields_reach_a_native_provider(live: Live) -> None:
    client = live.client()
    client.responses.create(model="gpt-4o-mini", input="Hello", extra_body={"prompt_cache_key": "k1", "include": ["x"]})
    sent = upstream(live, "openai")[-1].body
    assert sent["prompt_cache_key"] == "k1" and sent["include"] == ["x"]


def test_background_response_with_a_live_provider_can_be_cancelled(live: Live) -> None:
    client = live.client()
    live.fake("mistral").inject(Fault(delay_s=5))
    raw = client.responses.with_raw_response.create(model="mistral-small", input="Slow one", background=True)
    reply = raw.parse()
    assert reply.status == "queued"
    wait_until(lambda: client.responses.retrieve(reply.id).status == "in_progress", "the background run to start")
    cancelled = client.responses.cancel(reply.id)
    assert cancelled.status == "cancelled"
    assert client.responses.retrieve(reply.id).status == "cancelled"
    # The cancelled run is metered (its reservation settled) like a client that went away.
    request_id = raw.headers["x-request-id"]

    def logged() -> bool:
        with psycopg.connect(live.db.owner_dsn) as conn:
            row = conn.execute("SELECT status, door FROM requests WHERE id = %s", (request_id,)).fetchone()
        return row == ("cancelled", "responses")

    wait_until(logged, "the cancelled background request in the request log")
