"""Test-mode provider: deterministic answers in OpenAI's exact shapes, limits, tools, streams, embeddings."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import time
from array import array
from typing import Any

import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types import Completion, CreateEmbeddingResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from relay_server.domain.provider import ProviderCall, RequestKind
from relay_server.errors import ErrorKind, RelayError
from relay_server.providers.testmode import TestModeProvider
from relay_server.text import tokens

MODEL = "gpt-4o-mini"
CHAT = {"model": MODEL, "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello!"}]}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
            },
            "required": ["location", "unit", "days"],
        },
    },
}
TIME_TOOL = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}


def _call(kind: RequestKind, body: dict[str, Any], request_id: str = "req-1") -> ProviderCall:
    return ProviderCall(kind=kind, body=body, provider_model=str(body.get("model") or MODEL), request_id=request_id)


async def _chat(body: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return await TestModeProvider().complete(_call("chat", body, **kw))


async def _stream(kind: RequestKind, body: dict[str, Any]) -> list[dict[str, Any]]:
    return [chunk async for chunk in TestModeProvider().stream(_call(kind, body))]


def _content(body: dict[str, Any], index: int = 0) -> str:
    return body["choices"][index]["message"]["content"]


async def _raises(coro: Any, kind: ErrorKind, param: str | None) -> None:
    with pytest.raises(RelayError) as info:
        await coro
    assert info.value.kind is kind
    assert info.value.param == param


# --- chat ----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_chat_body_has_openai_shape() -> None:
    body = await _chat(CHAT, request_id="req-abc")
    ChatCompletion.model_validate(body)
    assert body["id"] == "chatcmpl-req-abc"
    assert body["object"] == "chat.completion"
    assert body["model"] == MODEL and body["system_fingerprint"] == "fp_relay_test"
    assert isinstance(body["created"], int) and abs(body["created"] - time.time()) < 60
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["message"]["refusal"] is None
    assert choice["finish_reason"] == "stop" and choice["logprobs"] is None
    usage = body["usage"]
    assert usage["prompt_tokens"] == tokens.count_chat_prompt(CHAT["messages"], MODEL)
    assert usage["completion_tokens"] == tokens.count_text(_content(body), MODEL)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["prompt_tokens_details"] == {"cached_tokens": 0, "audio_tokens": 0}
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 0


@pytest.mark.asyncio
async def test_same_request_same_answer_different_request_different_answer() -> None:
    first, second = await _chat(CHAT, request_id="a"), await _chat(CHAT, request_id="b")
    assert _content(first) == _content(second) and first["usage"] == second["usage"]
    assert first["id"] != second["id"]
    # Fields that cannot change an answer do not change it.
    noisy = {**CHAT, "stream": False, "user": "u-1", "metadata": {"k": "v"}, "stream_options": {"include_usage": True}}
    assert _content(await _chat(noisy)) == _content(first)
    other = {**CHAT, "messages": [{"role": "user", "content": "Something else entirely"}]}
    assert _content(await _chat(other)) != _content(first)
    assert _content(await _chat({**CHAT, "temperature": 0.2})) != _content(first)


@pytest.mark.asyncio
async def test_max_tokens_cuts_the_same_answer() -> None:
    full = _content(await _chat(CHAT))
    for key in ("max_tokens", "max_completion_tokens"):
        body = await _chat({**CHAT, key: 5})
        assert body["choices"][0]["finish_reason"] == "length"
        assert body["usage"]["completion_tokens"] == 5
        assert full.startswith(_content(body)) and len(_content(body)) < len(full)
    assert _content(await _chat({**CHAT, "max_tokens": 10_000})) == full


@pytest.mark.asyncio
async def test_stop_sequence_cuts_before_it() -> None:
    full = _content(await _chat(CHAT))
    word = full.split()[3]
    body = await _chat({**CHAT, "stop": ["zzz-not-there", word]})
    assert _content(body) == full[: full.index(word)]
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] == tokens.count_text(_content(body), MODEL)
    assert _content(await _chat({**CHAT, "stop": "zzz-not-there"})) == full


@pytest.mark.asyncio
async def test_n_choices_are_distinct_and_deterministic() -> None:
    body = await _chat({**CHAT, "n": 3})
    texts = [_content(body, i) for i in range(3)]
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert len(set(texts)) == 3
    assert texts[0] == _content(await _chat(CHAT))
    assert [_content(await _chat({**CHAT, "n": 3}), i) for i in range(3)] == texts
    assert body["usage"]["completion_tokens"] == sum(tokens.count_text(t, MODEL) for t in texts)
    # Even short caps keep choices apart (the library has few distinct openings).
    short = await _chat({**CHAT, "n": 15, "max_tokens": 1})
    assert len({_content(short, i) for i in range(15)}) == 15


@pytest.mark.asyncio
async def test_auto_tool_choice_calls_a_tool_after_a_user_message() -> None:
    body = await _chat({**CHAT, "tools": [WEATHER_TOOL]})
    ChatCompletion.model_validate(body)
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["function"]["name"] == "get_weather"
    assert call["id"].startswith("call_") and len(call["id"]) == 29
    args = json.loads(call["function"]["arguments"])
    assert set(args) == {"location", "unit", "days"}
    assert args["unit"] in ("celsius", "fahrenheit") and 1 <= args["days"] <= 7
    assert (await _chat({**CHAT, "tools": [WEATHER_TOOL]}))["choices"][0]["message"]["tool_calls"] == [call]
    assert body["usage"]["prompt_tokens"] == tokens.count_chat_prompt(CHAT["messages"], MODEL, [WEATHER_TOOL])
    assert body["usage"]["completion_tokens"] > 0


@pytest.mark.asyncio
async def test_tool_choice_variants() -> None:
    tools = [WEATHER_TOOL, TIME_TOOL]
    named = await _chat({**CHAT, "tools": tools, "tool_choice": {"type": "function", "function": {"name": "get_time"}}})
    assert named["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_time"
    assert json.loads(named["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]) == {}
    required = await _chat({**CHAT, "tools": tools, "tool_choice": "required"})
    assert required["choices"][0]["finish_reason"] == "tool_calls"
    none = await _chat({**CHAT, "tools": tools, "tool_choice": "none"})
    assert none["choices"][0]["finish_reason"] == "stop" and _content(none)
    after_result = {**CHAT, "tools": tools, "messages": CHAT["messages"] + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "12:00"},
    ]}
    assert (await _chat(after_result))["choices"][0]["finish_reason"] == "stop"
    unknown = {**CHAT, "tools": tools, "tool_choice": {"type": "function", "function": {"name": "nope"}}}
    await _raises(_chat(unknown), ErrorKind.INVALID_REQUEST, "tool_choice")


@pytest.mark.asyncio
async def test_json_response_formats_are_valid_json() -> None:
    body = await _chat({**CHAT, "response_format": {"type": "json_object"}})
    assert isinstance(json.loads(_content(body)), dict)
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer", "minimum": 18, "maximum": 99},
            "score": {"type": ["number", "null"]},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
            "kind": {"enum": ["a", "b"]},
            "address": {"$ref": "#/$defs/Address"},
        },
        "$defs": {"Address": {"type": "object", "properties": {"city": {"type": "string"}, "zip": {"type": "string"}}}},
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": True}}
    doc = json.loads(_content(await _chat({**CHAT, "response_format": fmt})))
    assert isinstance(doc["name"], str) and 18 <= doc["age"] <= 99 and isinstance(doc["score"], float)
    assert len(doc["tags"]) >= 2 and doc["kind"] in ("a", "b") and set(doc["address"]) == {"city", "zip"}


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("extra", "param"),
    [({"n": 0}, "n"), ({"n": 129}, "n"), ({"n": "2"}, "n"), ({"max_tokens": 0}, "max_tokens"),
     ({"max_tokens": -3}, "max_tokens"), ({"max_completion_tokens": True}, "max_completion_tokens"),
     ({"max_tokens": 2.5}, "max_tokens"), ({"stop": 5}, "stop"), ({"stop": ["a", 1]}, "stop"),
     ({"messages": []}, "messages"), ({"messages": "hi"}, "messages"), ({"messages": None}, "messages")],
)
async def test_bad_chat_parameters(extra: dict[str, Any], param: str) -> None:
    await _raises(_chat({**CHAT, **extra}), ErrorKind.INVALID_REQUEST, param)


@pytest.mark.asyncio
async def test_integral_floats_are_accepted() -> None:
    body = await _chat({**CHAT, "max_tokens": 4.0, "n": 2.0})
    assert len(body["choices"]) == 2 and body["usage"]["completion_tokens"] == 8


@pytest.mark.asyncio
async def test_wrong_kind_is_an_internal_error() -> None:
    provider = TestModeProvider()
    await _raises(provider.embed(_call("chat", CHAT)), ErrorKind.INTERNAL, None)
    await _raises(provider.complete(_call("embedding", {"input": "x"})), ErrorKind.INTERNAL, None)


# --- chat streaming ------------------------------------------------------------


@pytest.mark.asyncio
async def test_stream_matches_the_non_streaming_answer() -> None:
    request = {**CHAT, "n": 2, "max_tokens": 40}
    expected = await _chat(request)
    chunks = await _stream("chat", {**request, "stream": True})
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)
        assert chunk["id"] == chunks[0]["id"] and chunk["created"] == chunks[0]["created"]
        assert chunk["object"] == "chat.completion.chunk" and chunk["model"] == MODEL
    *content_chunks, usage_chunk = chunks
    assert usage_chunk["choices"] == [] and usage_chunk["usage"] == expected["usage"]
    assert all("usage" not in c for c in content_chunks)
    for index in (0, 1):
        mine = [c["choices"][0] for c in content_chunks if c["choices"][0]["index"] == index]
        assert mine[0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
        assert mine[-1]["delta"] == {} and mine[-1]["finish_reason"] == expected["choices"][index]["finish_reason"]
        assert all(c["finish_reason"] is None for c in mine[:-1])
        assert "".join(c["delta"].get("content") or "" for c in mine) == _content(expected, index)
        assert len(mine) > 4  # deltas of a few tokens, not one blob
    state = ChatCompletionStreamState()
    for chunk in chunks:
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    final = state.current_completion_snapshot  # get_final_completion() refuses "length" answers
    assert [c.message.content for c in final.choices] == [_content(expected, 0), _content(expected, 1)]


@pytest.mark.asyncio
async def test_streamed_tool_call_accumulates_to_the_same_call() -> None:
    request = {**CHAT, "tools": [WEATHER_TOOL]}
    expected = (await _chat(request))["choices"][0]["message"]["tool_calls"][0]
    chunks = await _stream("chat", {**request, "stream": True})
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0]["content"] is None
    opening = deltas[1]["tool_calls"][0]
    assert opening["id"] == expected["id"] and opening["function"] == {"name": "get_weather", "arguments": ""}
    args = "".join(d["tool_calls"][0]["function"]["arguments"] for d in deltas if "tool_calls" in d)
    assert args == expected["function"]["arguments"]
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    state = ChatCompletionStreamState()
    for chunk in chunks:
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    (call,) = state.get_final_completion().choices[0].message.tool_calls or []
    assert call.id == expected["id"] and call.function.arguments == expected["function"]["arguments"]


@pytest.mark.asyncio
async def test_stream_can_be_cancelled_mid_way() -> None:
    received: list[dict[str, Any]] = []
    first = asyncio.Event()

    async def consume() -> None:
        async for chunk in TestModeProvider(chunk_delay_s=0.05).stream(_call("chat", {**CHAT, "stream": True})):
            received.append(chunk)
            first.set()

    task = asyncio.create_task(consume())
    await first.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert 1 <= len(received) < len(await _stream("chat", CHAT))
    assert received[-1]["choices"]  # the usage chunk never arrived


# --- legacy completions --------------------------------------------------------


@pytest.mark.asyncio
async def test_completion_shape_and_default_limit() -> None:
    request = {"model": "gpt-3.5-turbo-instruct", "prompt": "Say hi"}
    body = await TestModeProvider().complete(_call("completion", request))
    Completion.model_validate(body)
    assert body["id"] == "cmpl-req-1" and body["object"] == "text_completion"
    (choice,) = body["choices"]
    assert choice["finish_reason"] == "length" and choice["logprobs"] is None and choice["index"] == 0
    assert body["usage"] == {"prompt_tokens": 2, "completion_tokens": 16, "total_tokens": 18}


@pytest.mark.asyncio
async def test_completion_prompts_times_n_with_echo() -> None:
    request = {"model": "gpt-3.5-turbo-instruct", "prompt": ["First", "Second"], "n": 2, "echo": True, "max_tokens": 30}
    body = await TestModeProvider().complete(_call("completion", request))
    texts = [c["text"] for c in body["choices"]]
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
    assert texts[0].startswith("First") and texts[1].startswith("First") and texts[2].startswith("Second")
    assert len(set(texts)) == 4
    assert body["usage"]["prompt_tokens"] == 2
    generated = sum(
        tokens.count_text(t.removeprefix("First").removeprefix("Second"), "gpt-3.5-turbo-instruct") for t in texts
    )
    assert body["usage"]["completion_tokens"] == generated

    chunks = await _stream("completion", {**request, "stream": True})
    *parts, usage_chunk = chunks
    assert usage_chunk["choices"] == [] and usage_chunk["usage"] == body["usage"]
    for index, text in enumerate(texts):
        mine = [c["choices"][0] for c in parts if c["choices"][0]["index"] == index]
        assert "".join(c["text"] for c in mine) == text
        assert mine[-1]["finish_reason"] == body["choices"][index]["finish_reason"]


@pytest.mark.asyncio
async def test_completion_token_prompts_and_bad_prompts() -> None:
    provider = TestModeProvider()
    body = await provider.complete(_call("completion", {"model": "m", "prompt": [[9906, 1917], [9906]], "echo": True}))
    assert [c["text"][:11] for c in body["choices"]] == ["Hello world", "Hello\n\n" + body["choices"][1]["text"][7:11]]
    assert body["usage"]["prompt_tokens"] == 3
    zero = await provider.complete(_call("completion", {"model": "m", "prompt": "x", "max_tokens": 0}))
    assert zero["choices"][0]["text"] == "" and zero["usage"]["completion_tokens"] == 0
    for bad in ([], [1, "a"], {"p": 1}, [[]], 5):
        bad_call = _call("completion", {"model": "m", "prompt": bad})
        await _raises(provider.complete(bad_call), ErrorKind.INVALID_REQUEST, "prompt")


# --- embeddings ----------------------------------------------------------------


async def _embed(body: dict[str, Any]) -> dict[str, Any]:
    return await TestModeProvider().embed(_call("embedding", body))


def _b64_vector(value: str) -> list[float]:
    return array("f", base64.b64decode(value)).tolist()


@pytest.mark.asyncio
async def test_embeddings_are_unit_vectors_stable_per_text() -> None:
    body = await _embed({"model": "text-embedding-3-small", "input": ["alpha", "beta", "alpha"]})
    CreateEmbeddingResponse.model_validate(body)
    assert body["object"] == "list" and body["model"] == "text-embedding-3-small"
    vectors = [d["embedding"] for d in body["data"]]
    assert [d["index"] for d in body["data"]] == [0, 1, 2] and all(d["object"] == "embedding" for d in body["data"])
    assert all(len(v) == 1536 for v in vectors)
    assert all(abs(math.hypot(*v) - 1.0) < 1e-5 for v in vectors)
    assert vectors[0] == vectors[2] != vectors[1]
    alone = await _embed({"model": "text-embedding-3-small", "input": "alpha"})
    assert alone["data"][0]["embedding"] == vectors[0]
    assert body["usage"] == {"prompt_tokens": 3, "total_tokens": 3}


@pytest.mark.asyncio
async def test_float_and_base64_decode_to_the_same_vector() -> None:
    request = {"model": "text-embedding-3-small", "input": ["one", "two"]}
    floats = await _embed(request)
    encoded = await _embed({**request, "encoding_format": "base64"})
    for f, b in zip(floats["data"], encoded["data"], strict=True):
        assert isinstance(b["embedding"], str)
        assert _b64_vector(b["embedding"]) == array("f", f["embedding"]).tolist()


@pytest.mark.asyncio
async def test_embedding_dimensions() -> None:
    large = await _embed({"model": "text-embedding-3-large", "input": "x"})
    assert len(large["data"][0]["embedding"]) == 3072
    short = await _embed({"model": "text-embedding-3-large", "input": "x", "dimensions": 256})
    vector = short["data"][0]["embedding"]
    assert len(vector) == 256 and abs(math.hypot(*vector) - 1.0) < 1e-5
    tokens_in = await _embed({"model": "text-embedding-3-small", "input": [[1, 2, 3], [4]], "dimensions": 8})
    assert [len(d["embedding"]) for d in tokens_in["data"]] == [8, 8] and tokens_in["usage"]["prompt_tokens"] == 4


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("extra", "param"),
    [({"input": ""}, "input"), ({"input": []}, "input"), ({"input": ["ok", ""]}, "input"),
     ({"input": [1, "a"]}, "input"), ({"input": {"a": 1}}, "input"), ({"input": None}, "input"),
     ({"input": [[1], []]}, "input"),
     ({"input": ["x"] * 2049}, "input"), ({"dimensions": 0}, "dimensions"), ({"dimensions": 3073}, "dimensions"),
     ({"dimensions": "64"}, "dimensions"), ({"dimensions": True}, "dimensions"),
     ({"encoding_format": "hex"}, "encoding_format")],
)
async def test_bad_embedding_requests(extra: dict[str, Any], param: str) -> None:
    await _raises(_embed({"model": "text-embedding-3-small", "input": "ok", **extra}), ErrorKind.INVALID_REQUEST, param)
