"""A completion's two shapes: assembled from a stream, replayed as a stream."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from relay_server.domain.provider import ProviderCall
from relay_server.providers.testmode import TestModeProvider
from relay_server.text.chunks import REPLAY_DELTA_CHARS, ChunkAssembler, replay_chunks


def _call(body: dict[str, Any], kind: str = "chat") -> ProviderCall:
    return ProviderCall(kind, body, body["model"], "req_test")  # type: ignore[arg-type]


async def _both(body: dict[str, Any], kind: str = "chat") -> tuple[dict[str, Any], list[dict[str, Any]]]:
    provider = TestModeProvider()
    return await provider.complete(_call(body, kind)), [c async for c in provider.stream(_call(body, kind))]


def _assemble(kind: str, chunks: list[dict[str, Any]]) -> ChunkAssembler:
    assembler = ChunkAssembler(kind)  # type: ignore[arg-type]
    for chunk in chunks:
        assembler.add(chunk)
    return assembler


CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Tell me about Relay."}], "n": 2}
TOOLS = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Weather?"}], "tool_choice": "required",
         "tools": [{"type": "function", "function": {"name": "w", "parameters": {
             "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]}


@pytest.mark.parametrize("body", [CHAT, TOOLS])
def test_a_chat_stream_assembles_into_the_plain_answer(body: dict[str, Any]) -> None:
    plain, chunks = asyncio.run(_both(body))
    assembled = _assemble("chat", chunks)
    assert assembled.finished
    response = assembled.response()
    for mine, theirs in zip(response["choices"], plain["choices"], strict=True):
        assert mine["message"]["content"] == theirs["message"]["content"]
        assert mine["message"].get("tool_calls") == theirs["message"].get("tool_calls")
        assert mine["finish_reason"] == theirs["finish_reason"]
    assert response["usage"] == plain["usage"] and response["id"] == plain["id"]


def test_a_completion_stream_assembles_too() -> None:
    body = {"model": "gpt-4o-mini", "prompt": "Once upon a time", "max_tokens": 30}
    plain, chunks = asyncio.run(_both(body, "completion"))
    response = _assemble("completion", chunks).response()
    assert response["choices"][0]["text"] == plain["choices"][0]["text"]
    assert response["object"] == "text_completion"


@pytest.mark.parametrize("body", [CHAT, TOOLS])
def test_a_replay_reassembles_to_the_same_answer(body: dict[str, Any]) -> None:
    plain, _ = asyncio.run(_both(body))
    replay = replay_chunks("chat", plain)
    assert replay[0]["choices"][0]["delta"]["role"] == "assistant"
    assert replay[-1]["choices"] == [] and replay[-1]["usage"] == plain["usage"]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == plain["id"] for c in replay)
    again = _assemble("chat", replay).response()
    assert [c["message"] for c in again["choices"]] == [
        {k: v for k, v in c["message"].items() if k in ("role", "content", "refusal", "tool_calls")} for c in plain["choices"]]


def test_long_content_is_replayed_in_bounded_deltas() -> None:
    text = "x" * (REPLAY_DELTA_CHARS * 3 + 5)
    response = {"id": "c", "created": 1, "model": "m", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"}]}
    replay = replay_chunks("chat", response)
    pieces = [c["choices"][0]["delta"]["content"] for c in replay[1:-2]]
    assert "".join(pieces) == text and max(map(len, pieces)) == REPLAY_DELTA_CHARS and len(pieces) == 4
    assert replay[-2]["choices"][0]["finish_reason"] == "length" and replay[-1]["usage"] is None


def test_an_unfinished_stream_is_not_finished() -> None:
    _, chunks = asyncio.run(_both(CHAT))
    cut = _assemble("chat", chunks[:3])
    assert not cut.finished and cut.text()
    assert not ChunkAssembler("chat").finished
    with pytest.raises(ValueError):
        ChunkAssembler("embedding")  # type: ignore[arg-type]
