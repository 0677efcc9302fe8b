"""Live keys end to end: the openai SDK → Envoy → Relay → fake OpenAI, Anthropic,
Mistral and Groq servers over loopback (the providers' base URLs point at the
fakes; Relay's pooled keys are created through the REST admin API)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import psycopg
import pytest
from openai import OpenAI

from relay_server.stack.redis import RedisHandle
from tests.fakes import FakeAnthropic, FakeOpenAI, Fault, Reply
from tests.support.pg import PgCluster, TestDatabase
from tests.support.stack import RelayStack, start_stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-3-5-haiku", "mistral": "mistral-small", "groq": "llama-3.1-8b-instant"}
SECRETS = {
    "openai": ["sk-openai-pooled-one-1111", "sk-openai-pooled-two-2222"],
    "anthropic": ["sk-ant-pooled-3333"],
    "mistral": ["mistral-pooled-4444"],
    "groq": ["gsk_groq_pooled_5555"],
}
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tell me about gateways."}]
WEATHER = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
TOOL_REPLY = Reply(text="", tool_calls=[("get_weather", {"city": "Paris", "unit": "celsius"})])


class FakeHost:
    """The fake providers on their own event loop in a background thread (the SDK calls are blocking)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fake-providers", daemon=True)
        self.fakes: dict[str, Any] = {}
        self._stack = contextlib.AsyncExitStack()

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    async def _open(self) -> None:
        for name, fake in (("openai", FakeOpenAI()), ("anthropic", FakeAnthropic()), ("mistral", FakeOpenAI("mistral")),
                           ("groq", FakeOpenAI("groq"))):
            self.fakes[name] = await self._stack.enter_async_context(fake)

    def start(self) -> None:
        self.thread.start()
        self.run(self._open())

    def stop(self) -> None:
        self.run(self._stack.aclose())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@contextlib.contextmanager
def environment(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@dataclass
class Live:
    stack: RelayStack
    host: FakeHost
    key: str
    admin: httpx.Client
    db: TestDatabase

    def client(self) -> OpenAI:
        return OpenAI(base_url=self.stack.base_url, api_key=self.key, max_retries=0, timeout=30)

    def fake(self, provider: str) -> Any:
        return self.host.fakes[provider]


def wait_until(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def live(pg_cluster: PgCluster, redis_server: RedisHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    host = FakeHost()
    host.start()
    db = pg_cluster.create_database()
    stack: RelayStack | None = None
    try:
        with psycopg.connect(db.owner_dsn) as conn:
            for provider, fake in host.fakes.items():
                conn.execute("UPDATE providers SET base_url = %s WHERE id = %s", (fake.base_url, provider))
        master = base64.b64encode(os.urandom(32)).decode()
        # No health monitor: its probes would consume faults the tests queue on the fakes.
        with environment(RELAY_MASTER_KEY=master, RELAY_HEALTH_MONITOR="false"):
            stack = start_stack(db, Path(tmp_path_factory.mktemp("relay-live")), redis_url=redis_server.url)
        admin = httpx.Client(base_url=stack.base_url.removesuffix("/v1"), headers={"authorization": f"Bearer {stack.admin_token}"}, timeout=30)
        for provider, secrets in SECRETS.items():
            for priority, secret in enumerate(secrets, start=1):
                body = {"credential": {"provider_id": provider, "name": f"{provider}-{priority}", "priority": priority}, "secret": secret}
                created = admin.post("/v1/provider-credentials", json=body)
                assert created.status_code == 200, created.text
        minted = admin.post("/v1/keys", json={"tenant_id": "ten_demo", "api_key": {
            "name": "e2e live key", "environment": "KEY_ENVIRONMENT_LIVE", "scope": "KEY_SCOPE_INFERENCE"}})
        assert minted.status_code == 200, minted.text
        key = minted.json()["secret"]
        assert key.startswith("rly_live_sk_")
        yield Live(stack, host, key, admin, db)
        admin.close()
    finally:
        if stack is not None:
            stack.stop()
        host.stop()
        pg_cluster.drop_database(db)


def chat_requests(fake: Any) -> list[Any]:
    return [r for r in fake.requests if r.path.endswith(("/chat/completions", "/messages"))]


# --- identical shapes from every provider ---------------------------------------------------


def reply_shape(reply: Any) -> dict[str, Any]:
    """The OpenAI-defined part of a chat completion, as types and fixed values."""
    choice = reply.choices[0]
    message = choice.message
    usage = reply.usage
    calls = [(type(c.id).__name__, c.type, c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls or []]
    return {
        "id": type(reply.id).__name__,
        "object": reply.object,
        "created": type(reply.created).__name__,
        "model": type(reply.model).__name__,
        "choices": (len(reply.choices), choice.index, choice.finish_reason, message.role, type(message.content).__name__),
        "tool_calls": calls,
        "usage": (type(usage.prompt_tokens).__name__, type(usage.completion_tokens).__name__,
                  usage.total_tokens == usage.prompt_tokens + usage.completion_tokens, usage.completion_tokens > 0),
    }


def stream_shape(chunks: list[Any]) -> dict[str, Any]:
    content = [c for c in chunks if c.choices]
    calls: dict[int, dict[str, str]] = {}
    for chunk in content:
        for delta in chunk.choices[0].delta.tool_calls or []:
            entry = calls.setdefault(delta.index, {"name": "", "arguments": ""})
            entry["name"] += delta.function.name or "" if delta.function else ""
            entry["arguments"] += delta.function.arguments or "" if delta.function else ""
    return {
        "objects": {c.object for c in chunks},
        "ids": len({c.id for c in chunks}),
        "first_role": content[0].choices[0].delta.role,
        "finish": [c.choices[0].finish_reason for c in content if c.choices[0].finish_reason],
        "text": "".join(c.choices[0].delta.content or "" for c in content),
        "tool_calls": {i: (e["name"], json.loads(e["arguments"])) for i, e in calls.items()},
        "usage_last": chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0,
        "usage_elsewhere": [c.usage for c in chunks[:-1] if c.usage is not None],
    }


def test_every_provider_answers_in_the_same_shape(live: Live) -> None:
    client = live.client()
    shapes = {}
    for provider, model in MODELS.items():
        shapes[provider] = reply_shape(client.chat.completions.create(model=model, messages=MESSAGES))
        assert len(chat_requests(live.fake(provider))) >= 1
    assert shapes["openai"]["choices"] == (1, 0, "stop", "assistant", "str")
    for provider in MODELS:
        assert shapes[provider] == shapes["openai"], provider


def test_every_provider_streams_in_the_same_shape(live: Live) -> None:
    client = live.client()
    shapes = {}
    for provider, model in MODELS.items():
        stream = client.chat.completions.create(model=model, messages=MESSAGES, stream=True, stream_options={"include_usage": True})
        shapes[provider] = stream_shape(list(stream))
    expected = {"objects": {"chat.completion.chunk"}, "ids": 1, "first_role": "assistant", "finish": ["stop"],
                "text": "Hello from the fake provider, nice to meet you.", "tool_calls": {}, "usage_last": True,
                "usage_elsewhere": []}
    for provider in MODELS:
        assert shapes[provider] == expected, provider


def test_every_provider_returns_tool_calls_in_the_same_shape(live: Live) -> None:
    client = live.client()
    for provider, model in MODELS.items():
        live.fake(provider).reply_with(TOOL_REPLY, TOOL_REPLY)
        reply = client.chat.completions.create(model=model, messages=MESSAGES, tools=WEATHER)
        assert reply_shape(reply)["tool_calls"] == [("str", "function", "get_weather", {"city": "Paris", "unit": "celsius"})], provider
        assert reply.choices[0].finish_reason == "tool_calls", provider
        shape = stream_shape(list(client.chat.completions.create(
            model=model, messages=MESSAGES, tools=WEATHER, stream=True, stream_options={"include_usage": True})))
        assert shape["tool_calls"] == {0: ("get_weather", {"city": "Paris", "unit": "celsius"})}, provider
        assert shape["finish"] == ["tool_calls"] and shape["usage_last"], provider
        sent = chat_requests(live.fake(provider))[-1]
        assert "get_weather" in json.dumps(sent.body["tools"]), provider


# --- failover, errors, cancellation ---------------------------------------------------------


def test_a_provider_5xx_fails_over_to_the_next_pooled_key(live: Live) -> None:
    fake = live.fake("openai")
    before = len(chat_requests(fake))
    fake.inject(Fault(status=500))
    reply = live.client().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert reply.choices[0].message.content
    used = [r.headers["authorization"] for r in chat_requests(fake)[before:]]
    assert used == [f"Bearer {SECRETS['openai'][0]}", f"Bearer {SECRETS['openai'][1]}"]


def test_a_provider_4xx_reaches_the_client_as_is_without_retry(live: Live) -> None:
    fake = live.fake("mistral")
    before = len(chat_requests(fake))
    fake.inject(Fault(status=400, message="Prompt contains forbidden content", code="bad_prompt"))
    with pytest.raises(openai.BadRequestError) as info:
        live.client().chat.completions.create(model="mistral-small", messages=MESSAGES)
    assert info.value.status_code == 400 and "forbidden content" in info.value.message
    assert len(chat_requests(fake)) == before + 1


def test_a_failure_mid_stream_is_an_in_band_error_frame(live: Live) -> None:
    body = {"model": "llama-3.1-8b-instant", "stream": True,
            "messages": [{"role": "user", "content": "Cut me short [[fault:disconnect_after=3]]"}]}
    with httpx.Client(timeout=30) as http:
        with http.stream("POST", live.stack.base_url + "/chat/completions", json=body,
                         headers={"authorization": f"Bearer {live.key}"}) as response:
            assert response.status_code == 200
            frames = [f for f in b"".join(response.iter_bytes()).split(b"\n\n") if f]
    # At least the first chunk, then the error as the last frame.  (How many of the
    # three frames the fake sent before cutting arrive depends on read timing: a
    # read after the cut reports the error before any data still buffered.)
    assert 2 <= len(frames) <= 4 and all(f.startswith(b"data: {") for f in frames)
    assert all("choices" in json.loads(f[len(b"data: "):]) for f in frames[:-1])
    error = json.loads(frames[-1][len(b"data: "):])
    assert error["error"]["code"] == "provider_error" and b"[DONE]" not in b"".join(frames)
    with pytest.raises(openai.APIError):  # the SDK raises on it rather than ending quietly
        list(live.client().chat.completions.create(model="llama-3.1-8b-instant", messages=body["messages"], stream=True))


def test_a_client_disconnect_closes_the_upstream_request(live: Live) -> None:
    fake = live.fake("anthropic")
    before = fake.disconnects
    body = {"model": "claude-3-5-haiku", "stream": True,
            "messages": [{"role": "user", "content": "Go on forever [[fault:hang;chunk_delay=0.01]]"}]}
    with httpx.Client(timeout=30) as http:
        with http.stream("POST", live.stack.base_url + "/chat/completions", json=body,
                         headers={"authorization": f"Bearer {live.key}"}) as response:
            lines = response.iter_lines()
            assert next(lines).startswith("data: {")
            assert next(lines) == ""
            assert next(lines).startswith("data: {")
    wait_until(lambda: fake.disconnects > before, "the fake provider to see the disconnect")


def test_test_keys_still_use_the_in_process_test_provider(live: Live) -> None:
    counts = {p: len(f.requests) for p, f in live.host.fakes.items()}
    client = OpenAI(base_url=live.stack.base_url, api_key=live.stack.test_key, max_retries=0, timeout=30)
    assert client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES).choices[0].message.content
    assert {p: len(f.requests) for p, f in live.host.fakes.items()} == counts


def test_a_fallback_model_serves_when_the_requested_one_cannot(live: Live) -> None:
    groq = live.fake("groq")
    before = len(chat_requests(groq))
    groq.inject(Fault(status=503))
    raw = live.client().chat.completions.with_raw_response.create(
        model="llama-3.1-8b-instant", messages=MESSAGES, extra_headers={"x-relay-fallback-models": "mistral-small"}
    )
    assert raw.parse().choices[0].message.content
    assert chat_requests(live.fake("mistral"))[-1].body["model"] == "mistral-small-2501"
    assert len(chat_requests(groq)) == before + 1, "the fallback model is tried before the requested one again"
    # The request is billed as the model that answered, at that model's price.
    row = None
    for _ in range(250):  # the request log is written in batches, off the request path
        with psycopg.connect(live.stack.db.owner_dsn) as conn:
            row = conn.execute(
                "SELECT r.model_id, r.requested_model, m.relay_name FROM requests r JOIN models m ON m.id = r.model_id"
                " WHERE r.id = %s",
                (raw.headers["x-request-id"],),
            ).fetchone()
        if row is not None:
            break
        time.sleep(0.02)
    assert row is not None and row[1:] == ("llama-3.1-8b-instant", "mistral-small")
    with pytest.raises(openai.NotFoundError):
        live.client().chat.completions.create(
            model="llama-3.1-8b-instant", messages=MESSAGES, extra_headers={"x-relay-fallback-models": "no-such-model"}
        )


# --- the credential admin API over REST ---------------------------------------------------------


def test_credentials_over_rest_list_by_hint_rotate_disable(live: Live) -> None:
    admin = live.admin
    first = admin.get("/v1/provider-credentials", params={"page_size": 2})
    assert first.status_code == 200, first.text
    page = first.json()
    assert len(page["credentials"]) == 2 and page["next_page_token"]
    everything = page["credentials"]
    token = page["next_page_token"]
    while token:
        more = admin.get("/v1/provider-credentials", params={"page_size": 2, "page_token": token}).json()
        everything += more["credentials"]
        token = more["next_page_token"]
    assert len(everything) == sum(len(s) for s in SECRETS.values())
    hints = {c["key_hint"] for c in everything}
    assert hints == {s[-4:] for secrets in SECRETS.values() for s in secrets}
    assert all(c["relay_owned"] and c["tenant_id"] == "" and "secret" not in c for c in everything)

    extra = admin.post("/v1/provider-credentials", json={"credential": {"provider_id": "groq", "priority": 9}, "secret": "gsk_spare_9999"})
    assert extra.status_code == 200 and extra.json()["credential"]["key_hint"] == "9999"
    cid = extra.json()["credential"]["id"]
    rotated = admin.post(f"/v1/provider-credentials/{cid}:rotate", json={"secret": "gsk_rotated_8888"})
    assert rotated.status_code == 200 and rotated.json()["credential"]["key_hint"] == "8888"
    disabled = admin.post(f"/v1/provider-credentials/{cid}:disable", json={})
    assert disabled.status_code == 200 and disabled.json()["credential"]["status"] == "disabled"
    assert admin.post("/v1/provider-credentials/pcred_nope:disable", json={}).status_code == 404
    bad = admin.post("/v1/provider-credentials", json={"credential": {"provider_id": "groq"}, "secret": "has space"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "secret"

    # An inference key is not an admin credential.
    refused = httpx.get(live.stack.base_url + "/provider-credentials", headers={"authorization": f"Bearer {live.key}"})
    assert refused.status_code in (401, 403)

    with psycopg.connect(live.db.owner_dsn) as conn, conn.cursor() as cur:
        actions = [r[0] for r in cur.execute(
            "SELECT action FROM audit_log WHERE resource_id = %s ORDER BY created_at", (cid,)).fetchall()]
        assert actions == ["provider_credential.created", "provider_credential.rotated", "provider_credential.disabled"]


def test_no_plaintext_provider_key_is_in_the_database(live: Live) -> None:
    everything = [s for secrets in SECRETS.values() for s in secrets] + ["gsk_spare_9999", "gsk_rotated_8888"]
    with psycopg.connect(live.db.owner_dsn) as conn, conn.cursor() as cur:
        for table in ("provider_credentials", "audit_log", "requests"):
            with cur.copy(f"COPY {table} TO STDOUT") as copy:
                dump = b"".join(bytes(block) for block in copy)
            for secret in everything:
                assert secret.encode() not in dump, table
                assert base64.b64encode(secret.encode()) not in dump, table
