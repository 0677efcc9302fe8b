"""The official openai SDK against Envoy → Relay with a test key: it must behave exactly like OpenAI."""

from __future__ import annotations

import base64
import struct

import openai
import pytest
from openai import OpenAI

from tests.support.stack import RelayStack

pytestmark = pytest.mark.e2e

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tell me about gateways."}]


def test_chat_completion(client: OpenAI) -> None:
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert reply.object == "chat.completion"
    assert reply.id.startswith("chatcmpl-")
    assert isinstance(reply.created, int)
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_same_input_same_output_and_different_input_differs(client: OpenAI) -> None:
    first = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    again = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    other = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Other."}])
    assert first.choices[0].message.content == again.choices[0].message.content
    assert first.usage == again.usage
    assert first.choices[0].message.content != other.choices[0].message.content
    assert first.id != again.id


def test_streamed_chat_equals_the_non_streamed_answer(client: OpenAI) -> None:
    whole = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    assert all(c.usage is None for c in chunks[:-1])
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


def test_stream_without_include_usage_has_no_usage_chunk(client: OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    assert chunks and all(c.choices for c in chunks)


def test_tools_come_back_as_tool_calls(client: OpenAI) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, tools=tools, tool_choice="required")
    call = reply.choices[0].message.tool_calls[0]
    assert reply.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather" and call.id.startswith("call_")


def test_max_tokens_truncates_with_finish_reason_length(client: OpenAI) -> None:
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=3)
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == 3


def test_legacy_completions(client: OpenAI) -> None:
    reply = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hello", max_tokens=20)
    assert reply.object == "text_completion" and reply.choices[0].text
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hello", max_tokens=20, stream=True)
        if c.choices
    )
    assert streamed == reply.choices[0].text


def test_embeddings_base64_default_and_float(client: OpenAI) -> None:
    by_sdk_default = client.embeddings.create(model="text-embedding-3-small", input=["hello", "world"])
    floats = client.embeddings.create(model="text-embedding-3-small", input=["hello", "world"], encoding_format="float")
    assert len(by_sdk_default.data) == 2 and len(by_sdk_default.data[0].embedding) == 1536
    for a, b in zip(by_sdk_default.data, floats.data, strict=True):
        assert a.embedding == pytest.approx(b.embedding, abs=1e-6)
    assert by_sdk_default.usage.prompt_tokens > 0
    small = client.embeddings.create(model="text-embedding-3-small", input="hi", dimensions=8, encoding_format="float")
    assert len(small.data[0].embedding) == 8


def test_raw_base64_embedding_is_little_endian_float32(relay: RelayStack, http) -> None:
    body = http.post("/embeddings", json={"model": "text-embedding-3-small", "input": "hi", "encoding_format": "base64"}).json()
    raw = base64.b64decode(body["data"][0]["embedding"])
    vector = struct.unpack(f"<{len(raw) // 4}f", raw)
    assert len(vector) == 1536 and abs(sum(v * v for v in vector) - 1) < 1e-3


def test_models_list_and_retrieve(client: OpenAI) -> None:
    models = client.models.list()
    ids = {m.id for m in models.data}
    assert {"gpt-4o-mini", "text-embedding-3-small"} <= ids
    assert all(isinstance(m.created, int) and m.object == "model" for m in models.data)
    assert client.models.retrieve("gpt-4o-mini").id == "gpt-4o-mini"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_typed_sdk_objects_validate_strictly(client: OpenAI) -> None:
    """No int64-as-string or missing fields: the SDK's pydantic models accept the JSON in strict mode."""
    from openai.types import Model
    from openai.types.chat import ChatCompletion

    reply = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
    ChatCompletion.model_validate(reply.http_response.json(), strict=True)
    for item in client.models.with_raw_response.list().http_response.json()["data"]:
        Model.model_validate(item, strict=True)
