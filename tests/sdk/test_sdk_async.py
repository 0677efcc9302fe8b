"""The grpc.aio client against a real gRPC server."""

from __future__ import annotations

import pytest
from google.protobuf import json_format

import relay_sdk as sdk
from relay_proto.relay.v1 import chat_pb2
from relay_sdk import AsyncRelay, AsyncResponseStream, RetryPolicy
from tests.sdk.conftest import ADMIN_TOKEN, API_KEY, REQUEST_ID, Faults, Services

grpc_max_workers = 8

USER_HELLO = [{"role": "user", "content": "hello there relay"}]
pytestmark = pytest.mark.asyncio


def _client(addr: str, policy: RetryPolicy) -> AsyncRelay:
    return AsyncRelay(addr, api_key=API_KEY, admin_token=ADMIN_TOKEN, timeout=5.0, retry_policy=policy)


async def test_unary_chat_and_embed(grpc_addr: str, services: Services, retry_policy: RetryPolicy) -> None:
    async with _client(grpc_addr, retry_policy) as relay:
        reply = await relay.chat("gpt-test", USER_HELLO, seed=7, reasoning_effort="low", verbosity="high")
        vectors = await relay.embed("embed-test", "abc")
    assert isinstance(reply, chat_pb2.ChatCompletion) and reply.choices[0].message.content == "hello there relay"
    chat_request, embed_request = services.inference.requests
    assert chat_request.seed == 7 and chat_request.reasoning_effort == "low"
    assert json_format.MessageToDict(chat_request.extra_body) == {"verbosity": "high"}
    assert embed_request.input.string_value == "abc"
    assert [v.number_value for v in vectors.data[0].embedding.list_value.values] == [3.0, 1.0]


async def test_stream_is_an_async_iterator_of_chunks(grpc_addr: str, services: Services, retry_policy: RetryPolicy) -> None:
    async with _client(grpc_addr, retry_policy) as relay:
        stream = relay.chat_stream("gpt-test", USER_HELLO)
        assert isinstance(stream, AsyncResponseStream)
        chunks = [chunk async for chunk in stream]
        assert await stream.request_id() == REQUEST_ID
    assert "".join(c.choices[0].delta.content for c in chunks) == "hello there relay"


async def test_stream_failure_after_first_message_is_raised_not_retried(
    grpc_addr: str, services: Services, faults: Faults, retry_policy: RetryPolicy
) -> None:
    received = []
    async with _client(grpc_addr, retry_policy) as relay:
        with pytest.raises(sdk.NoProviderAvailableError) as info:
            async for chunk in relay.inference.stream_chat_completion(model="fail-after-first", messages=USER_HELLO):
                received.append(chunk.choices[0].delta.content)
    assert received == ["hello"]
    assert info.value.request_id == REQUEST_ID
    assert faults.calls["StreamChatCompletion"] == 1


async def test_a_stream_that_fails_before_any_message_raises_the_mapped_error(
    grpc_addr: str, services: Services, retry_policy: RetryPolicy
) -> None:
    async with _client(grpc_addr, retry_policy) as relay:
        async with relay.chat_stream("error:spend_cap_exceeded", USER_HELLO) as stream:
            with pytest.raises(sdk.SpendCapExceededError) as info:
                await anext(stream)
    assert info.value.http_status == 402


async def test_closing_a_stream_early_ends_it(grpc_addr: str, services: Services, retry_policy: RetryPolicy) -> None:
    async with _client(grpc_addr, retry_policy) as relay:
        stream = relay.chat_stream("gpt-test", [{"role": "user", "content": "one two three four"}])
        first = await anext(stream)
        await stream.aclose()
        rest = [chunk async for chunk in stream]
        cancelled = relay.chat_stream("gpt-test", [{"role": "user", "content": "one two three four"}])
        await anext(cancelled)
        cancelled.cancel()
        after_cancel = [chunk async for chunk in cancelled]
    assert first.choices[0].delta.content == "one" and rest == [] and after_cancel == []


@pytest.mark.parametrize(
    ("model", "error_type"),
    [
        ("error:invalid_api_key", sdk.AuthenticationError),
        ("error:rate_limit_exceeded", sdk.RateLimitError),
        ("error:tenant_suspended", sdk.TenantSuspendedError),
        ("error:model_not_found", sdk.ModelNotFoundError),
    ],
)
async def test_errors_map_to_subclasses(
    grpc_addr: str, services: Services, retry_policy: RetryPolicy, model: str, error_type: type[sdk.RelayError]
) -> None:
    async with _client(grpc_addr, retry_policy) as relay:
        with pytest.raises(error_type) as info:
            await relay.chat(model, USER_HELLO)
    assert info.value.request_id == REQUEST_ID and info.value.body is not None


async def test_not_found_on_an_admin_read_and_per_call_timeout(
    grpc_addr: str, services: Services, faults: Faults, retry_policy: RetryPolicy
) -> None:
    async with _client(grpc_addr, retry_policy) as relay:
        with pytest.raises(sdk.NotFoundError) as info:
            await relay.api_keys.get_api_key(key_id="nope")
        with pytest.raises(sdk.RequestTimeoutError):
            await relay.chat("slow", USER_HELLO, timeout=0.05)
    assert "nope" in info.value.message
    assert faults.metadata[0]["authorization"] == f"Bearer {ADMIN_TOKEN}"
    assert faults.metadata[1]["authorization"] == f"Bearer {API_KEY}"


async def test_bad_keyword_fails_before_the_call(grpc_addr: str, services: Services, faults: Faults) -> None:
    async with AsyncRelay(grpc_addr) as relay:
        with pytest.raises(TypeError, match="no field 'key'"):
            await relay.api_keys.get_api_key(key="key_1")
    assert faults.calls["GetApiKey"] == 0
