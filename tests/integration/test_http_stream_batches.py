"""A provider stream hands out what one upstream read brought as a batch (``HttpStream.buffered``),
and a translator error later in that read still comes after the items before it."""

from __future__ import annotations

import orjson
import pytest

from relay_server.domain.provider import Credential, ProviderCall
from relay_server.providers.http_client import HttpClient
from relay_server.providers.registry import build_provider
from relay_server.providers.translator import ProviderFailure
from tests.support.raw_http import Exchange, Upstream

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(30)]


def _event(content: str | None, finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": {} if content is None else {"content": content}, "finish_reason": finish}
    chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [choice]}
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


USAGE = b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[],' \
        b'"usage":{"prompt_tokens":3,"completion_tokens":3,"total_tokens":6}}\n\n'


def _answer(body: bytes):  # noqa: ANN202
    async def respond(ex: Exchange) -> bool:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\n\r\n" % len(body)
        await ex.send(head + body)  # one write: the client reads it at once
        return True
    return respond


def _call() -> ProviderCall:
    return ProviderCall("chat", {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True},
                        "m", "req_1", credential=Credential("cred_1", "sk-test"))


async def test_one_read_is_one_batch() -> None:
    body = _event("a") + _event("b") + _event("c") + _event(None, "stop") + USAGE + b"data: [DONE]\n\n"
    async with Upstream(_answer(body)) as up:
        client = HttpClient.create()
        try:
            provider = build_provider("openai", name="openai", client=client, base_url=up.url())
            stream = provider.stream(_call())
            first = await anext(stream)
            assert first["choices"][0]["delta"] == {"content": "a"}
            assert stream.buffered == 5  # b, c, the finish chunk and usage came with it, and the end
            rest = [item async for item in stream]
            assert [c["choices"][0]["delta"].get("content") for c in rest[:3]] == ["b", "c", None]
            assert rest[-1]["usage"]["total_tokens"] == 6
        finally:
            await client.close()


async def test_a_bad_event_later_in_a_read_comes_after_the_items_before_it() -> None:
    body = _event("a") + _event("b") + b"data: {not json\n\n" + _event("c")
    async with Upstream(_answer(body)) as up:
        client = HttpClient.create()
        try:
            provider = build_provider("openai", name="openai", client=client, base_url=up.url())
            stream = provider.stream(_call())
            got = [(await anext(stream))["choices"][0]["delta"]["content"], (await anext(stream))["choices"][0]["delta"]["content"]]
            assert got == ["a", "b"]
            with pytest.raises(ProviderFailure):
                await anext(stream)
        finally:
            await client.close()
