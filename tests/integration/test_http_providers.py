"""HttpProvider over real HTTP (loopback) against the fake provider servers."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import socket
import struct
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import pytest_asyncio

from relay_server.domain.provider import Credential, ProviderCall, Usage
from relay_server.errors import ErrorKind, RelayError
from relay_server.providers.http_client import HttpClient, Timeouts
from relay_server.providers.http_provider import HttpProvider
from relay_server.providers.registry import build_provider
from relay_server.providers.translator import ProviderFailure
from tests.fakes import FAULT_HEADER, FakeAnthropic, FakeOpenAI, Fault, Reply

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(30)]

KEY = "sk-live-secret-4242"
WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
}
TOOL_REPLY = Reply(text="Let me check.", tool_calls=[("get_weather", {"city": "Paris", "unit": "celsius"})])


@pytest_asyncio.fixture
async def client() -> AsyncIterator[HttpClient]:
    http = HttpClient.create()
    yield http
    await http.close()


@pytest_asyncio.fixture
async def openai_fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        fake.valid_keys = {KEY}
        yield fake


@pytest_asyncio.fixture
async def anthropic_fake() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic() as fake:
        fake.valid_keys = {KEY}
        yield fake


def provider(api: str, fake: Any, client: HttpClient, timeouts: Timeouts | None = None) -> HttpProvider:
    built = build_provider(api, name=api, client=client, base_url=fake.base_url, timeouts=timeouts)
    assert isinstance(built, HttpProvider)
    return built


def call(body: dict[str, Any], *, kind: str = "chat", model: str = "gpt-4o-mini", key: str = KEY,
         timeout_s: float = 10.0) -> ProviderCall:
    return ProviderCall(kind, body, model, "req_1", Credential("cred_1", key), timeout_s)  # type: ignore[arg-type]


def chat(text: str = "What is the weather like today", **extra: Any) -> dict[str, Any]:
    return {"model": "relay-name", "messages": [{"role": "user", "content": text}], **extra}


async def collect(stream: AsyncIterator[dict[str, Any]]) -> list[dict[str, Any]]:
    return [chunk async for chunk in stream]


def text_of(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def tool_calls_of(chunks: list[dict[str, Any]]) -> dict[int, dict[str, str]]:
    calls: dict[int, dict[str, str]] = {}
    for c in chunks:
        for piece in (c["choices"][0]["delta"].get("tool_calls") or []) if c["choices"] else []:
            slot = calls.setdefault(piece["index"], {"id": "", "name": "", "arguments": ""})
            slot["id"] = piece.get("id") or slot["id"]
            slot["name"] = piece.get("function", {}).get("name") or slot["name"]
            slot["arguments"] += piece.get("function", {}).get("arguments") or ""
    return calls


def assert_billed(chunks_or_body: Any, fake: Any) -> None:
    usage = chunks_or_body[-1]["usage"] if isinstance(chunks_or_body, list) else chunks_or_body["usage"]
    got = Usage.from_openai(usage)
    assert got is not None
    assert (got.prompt_tokens, got.completion_tokens) == (fake.prompt_tokens_total, fake.completion_tokens_total)
    assert fake.completion_tokens_total > 0


# -- OpenAI --------------------------------------------------------------------------


async def test_openai_complete(client: HttpClient, openai_fake: FakeOpenAI) -> None:
    body = chat(stream=True, stream_options={"include_usage": False}, new_field=[1])
    out = await provider("openai", openai_fake, client).complete(call(body))
    assert out["choices"][0]["message"]["content"] == openai_fake.default_reply.text
    sent = openai_fake.last
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.body["model"] == "gpt-4o-mini" and sent.body["new_field"] == [1]
    assert "stream" not in sent.body and "stream_options" not in sent.body
    assert_billed(out, openai_fake)


async def test_openai_stream_text(client: HttpClient, openai_fake: FakeOpenAI) -> None:
    chunks = await collect(provider("openai", openai_fake, client).stream(call(chat())))
    assert openai_fake.last.body["stream_options"] == {"include_usage": True}
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert text_of(chunks) == openai_fake.default_reply.text
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert_billed(chunks, openai_fake)


async def test_openai_stream_tool_calls(client: HttpClient, openai_fake: FakeOpenAI) -> None:
    openai_fake.reply_with(TOOL_REPLY)
    chunks = await collect(provider("openai", openai_fake, client).stream(call(chat(tools=[WEATHER_TOOL]))))
    calls = tool_calls_of(chunks)
    assert calls[0]["name"] == "get_weather"
    assert orjson.loads(calls[0]["arguments"]) == {"city": "Paris", "unit": "celsius"}
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert_billed(chunks, openai_fake)


async def test_openai_legacy_completion_stream(client: HttpClient, openai_fake: FakeOpenAI) -> None:
    chunks = await collect(provider("openai", openai_fake, client).stream(call({"prompt": "Say hi"}, kind="completion")))
    assert openai_fake.last.path == "/v1/completions"
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == openai_fake.default_reply.text
    assert {c["object"] for c in chunks} == {"text_completion"}
    assert_billed(chunks, openai_fake)


async def test_openai_embeddings(client: HttpClient, openai_fake: FakeOpenAI) -> None:
    p = provider("openai", openai_fake, client)
    floats = await p.embed(call({"input": ["a b", "c"], "dimensions": 4}, kind="embedding"))
    encoded = await p.embed(call({"input": ["a b", "c"], "dimensions": 4, "encoding_format": "base64"}, kind="embedding"))
    assert len(floats["data"]) == 2 and len(floats["data"][0]["embedding"]) == 4
    decoded = list(struct.unpack("<4f", base64.b64decode(encoded["data"][0]["embedding"])))
    assert decoded == pytest.approx(floats["data"][0]["embedding"], abs=1e-6)
    assert floats["usage"]["prompt_tokens"] == 3


async def test_list_models(client: HttpClient, openai_fake: FakeOpenAI, anthropic_fake: FakeAnthropic) -> None:
    credential = Credential("c", KEY)
    models = await provider("openai", openai_fake, client).list_models(credential)
    assert [m["id"] for m in models["data"]] == ["gpt-4o-mini", "gpt-4o"]
    claude = await provider("anthropic", anthropic_fake, client).list_models(credential)
    assert claude["data"][0]["id"] == "claude-3-5-sonnet-20241022" and claude["data"][0]["object"] == "model"


async def test_stream_without_usage_ends_cleanly(client: HttpClient, openai_fake: FakeOpenAI) -> None:
    openai_fake.inject(Fault(no_usage=True))
    chunks = await collect(provider("openai", openai_fake, client).stream(call(chat())))
    assert text_of(chunks) == openai_fake.default_reply.text
    assert all(c.get("usage") is None for c in chunks)


# -- Mistral and Groq flavours ---------------------------------------------------------


async def test_mistral_stream_usage_moved_to_final_chunk(client: HttpClient) -> None:
    async with FakeOpenAI(flavor="mistral") as fake:
        # The fake answers 422 to stream_options/seed: success proves they were translated.
        chunks = await collect(provider("mistral", fake, client).stream(call(chat(seed=3, user="u"))))
        assert fake.last.body["random_seed"] == 3
        assert chunks[-1]["choices"] == [] and all("usage" not in c for c in chunks[:-1])
        assert_billed(chunks, fake)


async def test_groq_stream_usage_from_x_groq(client: HttpClient) -> None:
    async with FakeOpenAI(flavor="groq") as fake:
        body = chat()
        body["messages"][0]["name"] = "alice"
        chunks = await collect(provider("groq", fake, client).stream(call(body)))
        assert all("x_groq" not in c for c in chunks)
        assert_billed(chunks, fake)
        with pytest.raises(ProviderFailure) as info:
            await provider("groq", fake, client).complete(call(chat(n=2)))
        assert info.value.param == "n" and len(fake.requests) == 1  # refused before any I/O


# -- Anthropic ---------------------------------------------------------------------------


def tool_round_trip() -> dict[str, Any]:
    return {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": "Checking.", "tool_calls": [
                {"id": "toolu_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
                {"id": "toolu_b", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Nice"}'}},
            ]},
            # Two tool messages and a user message: one Anthropic user turn (roles must alternate).
            {"role": "tool", "tool_call_id": "toolu_a", "content": "18C and sunny"},
            {"role": "tool", "tool_call_id": "toolu_b", "content": "22C"},
            {"role": "user", "content": "And tomorrow?"},
        ],
        "tools": [WEATHER_TOOL],
        "tool_choice": "auto",
    }


async def test_anthropic_complete_text_with_tool_history(client: HttpClient, anthropic_fake: FakeAnthropic) -> None:
    anthropic_fake.cache_read_tokens = 50
    anthropic_fake.cache_write_tokens = 5
    out = await provider("anthropic", anthropic_fake, client).complete(call(tool_round_trip(), model="claude-3-5-sonnet"))
    sent = anthropic_fake.last
    assert sent.headers["x-api-key"] == KEY and "authorization" not in sent.headers
    assert sent.body["system"] == "Be brief."
    assert out["choices"][0]["message"]["content"] == anthropic_fake.default_reply.text
    assert out["choices"][0]["finish_reason"] == "stop"
    usage = Usage.from_openai(out["usage"])
    assert usage == Usage(anthropic_fake.prompt_tokens_total + 55, anthropic_fake.completion_tokens_total, 50, 5)


async def test_anthropic_complete_tool_call(client: HttpClient, anthropic_fake: FakeAnthropic) -> None:
    anthropic_fake.reply_with(TOOL_REPLY)
    out = await provider("anthropic", anthropic_fake, client).complete(call(chat(tools=[WEATHER_TOOL])))
    message = out["choices"][0]["message"]
    assert message["content"] == "Let me check."
    assert orjson.loads(message["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris", "unit": "celsius"}
    assert out["choices"][0]["finish_reason"] == "tool_calls"
    assert_billed(out, anthropic_fake)


async def test_anthropic_stream_text_and_tools(client: HttpClient, anthropic_fake: FakeAnthropic) -> None:
    anthropic_fake.reply_with(TOOL_REPLY)
    chunks = await collect(provider("anthropic", anthropic_fake, client).stream(call(tool_round_trip())))
    assert anthropic_fake.last.body["stream"] is True
    assert text_of(chunks) == "Let me check."
    calls = tool_calls_of(chunks)
    assert calls[0]["id"] == "toolu_0" and orjson.loads(calls[0]["arguments"])["city"] == "Paris"
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert_billed(chunks, anthropic_fake)


async def test_anthropic_max_tokens_is_length(client: HttpClient, anthropic_fake: FakeAnthropic) -> None:
    chunks = await collect(provider("anthropic", anthropic_fake, client).stream(call(chat(max_tokens=2))))
    assert text_of(chunks) == "Hello from "
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["usage"]["completion_tokens"] == 2


# -- errors ------------------------------------------------------------------------------


ERROR_CASES = [
    (Fault(status=400, message="bad max_tokens", code="invalid_value"), ErrorKind.BAD_REQUEST, 400, False),
    (Fault(status=429, retry_after="3"), ErrorKind.RATE_LIMIT_EXCEEDED, 429, True),
    (Fault(status=500), ErrorKind.PROVIDER_ERROR, 502, True),
    (Fault(status=529), ErrorKind.PROVIDER_ERROR, 502, True),
]


@pytest.mark.parametrize(("fault", "kind", "status", "retryable"), ERROR_CASES)
@pytest.mark.parametrize("api", ["openai", "anthropic"])
@pytest.mark.parametrize("streaming", [False, True])
async def test_http_errors(client: HttpClient, openai_fake: FakeOpenAI, anthropic_fake: FakeAnthropic, api: str,
                           streaming: bool, fault: Fault, kind: ErrorKind, status: int, retryable: bool) -> None:
    fake = openai_fake if api == "openai" else anthropic_fake
    fake.inject(fault)
    p = provider(api, fake, client)
    with pytest.raises(ProviderFailure) as info:
        if streaming:
            await collect(p.stream(call(chat())))
        else:
            await p.complete(call(chat()))
    err = info.value
    assert (err.kind, err.http_status, err.retryable, err.upstream_status) == (kind, status, retryable, fault.status)
    if status == 400:
        assert err.message == "bad max_tokens"
    if status == 429:
        assert err.switch_key and err.retry_after_s == 3


@pytest.mark.parametrize("api", ["openai", "anthropic"])
async def test_provider_401_is_not_the_tenants_invalid_key(client: HttpClient, openai_fake: FakeOpenAI,
                                                           anthropic_fake: FakeAnthropic, api: str) -> None:
    fake = openai_fake if api == "openai" else anthropic_fake
    with pytest.raises(ProviderFailure) as info:
        await provider(api, fake, client).complete(call(chat(), key="sk-revoked-key-7777"))
    err = info.value
    assert err.kind is ErrorKind.PROVIDER_ERROR and err.http_status == 502 and err.code != "invalid_api_key"
    assert "7777" not in orjson.dumps(err.body()).decode()


async def test_fault_by_header_and_by_marker(client: HttpClient, openai_fake: FakeOpenAI,
                                             anthropic_fake: FakeAnthropic) -> None:
    with pytest.raises(ProviderFailure) as info:
        await provider("anthropic", anthropic_fake, client).complete(call(chat("hi [[fault:status=503]]")))
    assert info.value.upstream_status == 503
    # The header route (used by tests that talk to the fake directly).
    req = provider("openai", openai_fake, client).translator.request(call(chat()), stream=False)
    headers = {**req.headers, FAULT_HEADER: "status=418"}
    resp = await client.send(type(req)(req.method, req.url, headers, req.json_body), Timeouts(), 5.0)
    assert resp.status == 418


async def test_slow_first_byte_times_out_and_hangs_up(client: HttpClient, openai_fake: FakeOpenAI) -> None:
    openai_fake.inject(Fault(delay_s=20))
    p = provider("openai", openai_fake, client, Timeouts(first_byte_s=0.2))
    with pytest.raises(ProviderFailure) as info:
        await collect(p.stream(call(chat())))
    assert info.value.kind is ErrorKind.REQUEST_TIMEOUT and info.value.retryable
    await asyncio.wait_for(openai_fake.disconnected.wait(), 5)


async def test_total_timeout_non_streaming(client: HttpClient, anthropic_fake: FakeAnthropic) -> None:
    anthropic_fake.inject(Fault(delay_s=20))
    with pytest.raises(ProviderFailure) as info:
        await provider("anthropic", anthropic_fake, client).complete(call(chat(), timeout_s=0.3))
    assert info.value.kind is ErrorKind.REQUEST_TIMEOUT


async def test_stalled_stream_times_out(client: HttpClient, openai_fake: FakeOpenAI) -> None:
    openai_fake.inject(Fault(chunk_delay_s=20))
    p = provider("openai", openai_fake, client, Timeouts(idle_s=0.2))
    with pytest.raises(ProviderFailure) as info:
        await collect(p.stream(call(chat())))
    assert info.value.kind is ErrorKind.REQUEST_TIMEOUT


async def test_connection_refused(client: HttpClient) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connections are refused
        p = build_provider("openai_compatible", name="local", client=client, base_url=f"http://127.0.0.1:{port}/v1")
        with pytest.raises(ProviderFailure) as info:
            await p.complete(call(chat()))
    assert info.value.kind is ErrorKind.PROVIDER_ERROR and info.value.retryable
    assert info.value.upstream_message  # the transport detail, for logs


# -- broken streams ------------------------------------------------------------------------


@pytest.mark.parametrize("api", ["openai", "anthropic"])
@pytest.mark.parametrize(
    "fault",
    [Fault(disconnect_after=3), Fault(end_after=3), Fault(malformed_after=2), Fault(error_event_after=3)],
    ids=["disconnect", "clean-eof-without-end-marker", "malformed", "error-event"],
)
async def test_broken_stream_raises_after_partial_output(client: HttpClient, openai_fake: FakeOpenAI,
                                                         anthropic_fake: FakeAnthropic, api: str, fault: Fault) -> None:
    fake = openai_fake if api == "openai" else anthropic_fake
    fake.inject(fault)
    received: list[dict[str, Any]] = []
    with pytest.raises(RelayError) as info:
        async for chunk in provider(api, fake, client).stream(call(chat())):
            received.append(chunk)
    assert info.value.kind is ErrorKind.PROVIDER_ERROR
    assert received, "the failure came after some output"
    assert not any(c.get("usage") for c in received), "a cut stream must not look complete"


# -- cancellation and connection reuse ---------------------------------------------------------


@pytest.mark.parametrize("api", ["openai", "anthropic"])
async def test_cancelling_the_consumer_closes_the_upstream(client: HttpClient, openai_fake: FakeOpenAI,
                                                           anthropic_fake: FakeAnthropic, api: str) -> None:
    fake = openai_fake if api == "openai" else anthropic_fake
    fake.inject(Fault(hang=True))
    first = asyncio.Event()

    async def consume() -> None:
        async for _ in provider(api, fake, client).stream(call(chat())):
            first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), 5)
    assert not fake.disconnected.is_set()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await asyncio.wait_for(fake.disconnected.wait(), 5)


async def test_closing_the_stream_early_closes_the_upstream(client: HttpClient, openai_fake: FakeOpenAI) -> None:
    openai_fake.inject(Fault(hang=True))
    stream = provider("openai", openai_fake, client).stream(call(chat()))
    async with contextlib.aclosing(stream):
        await anext(stream)
    await asyncio.wait_for(openai_fake.disconnected.wait(), 5)


async def test_connections_are_reused_but_not_after_a_cut(client: HttpClient, openai_fake: FakeOpenAI) -> None:
    p = provider("openai", openai_fake, client)
    await p.complete(call(chat()))
    await collect(p.stream(call(chat())))
    await p.complete(call(chat()))
    ports = [r.peer_port for r in openai_fake.requests]
    assert len(set(ports)) == 1, "completed requests and streams return their connection to the pool"

    openai_fake.inject(Fault(hang=True))
    stream = p.stream(call(chat()))
    async with contextlib.aclosing(stream):
        await anext(stream)
    await p.complete(call(chat()))
    assert openai_fake.requests[-1].peer_port != ports[0], "an abandoned stream's connection is not reused"


async def test_credentials_never_logged(client: HttpClient, openai_fake: FakeOpenAI,
                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    p = provider("openai", openai_fake, client)
    await p.complete(call(chat()))
    openai_fake.inject(Fault(status=500))
    with pytest.raises(ProviderFailure) as info:
        await p.complete(call(chat()))
    assert "upstream POST" in caplog.text  # debug logging was on
    assert KEY not in caplog.text and KEY not in repr(info.value)
