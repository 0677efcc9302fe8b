"""The blocking client against a real gRPC server: typed unary and streaming calls, auth, inputs."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import json_format, struct_pb2

from relay_proto.relay.v1 import chat_pb2
from relay_sdk import (
    ChatCompletionRequest,
    ChatMessage,
    NoProviderAvailableError,
    Relay,
    RequestTimeoutError,
    RetryPolicy,
    UnimplementedError,
)
from relay_sdk._wrappers import Credentials, MethodSpec, SyncInvoker
from tests.sdk.conftest import ADMIN_TOKEN, API_KEY, PROBE_STREAM, REQUEST_ID, Faults, Services

grpc_max_workers = 8

USER_HELLO = [{"role": "user", "content": "hello there relay"}]


@pytest.fixture
def client(grpc_addr: str, services: Services, retry_policy: RetryPolicy) -> Iterator[Relay]:
    with Relay(grpc_addr, api_key=API_KEY, admin_token=ADMIN_TOKEN, timeout=5.0, retry_policy=retry_policy) as relay:
        yield relay


def test_chat_returns_a_typed_completion_and_forwards_params(client: Relay, services: Services) -> None:
    reply = client.chat("gpt-test", USER_HELLO, temperature=0.2, stream_options={"include_usage": True}, top_k=40)
    assert isinstance(reply, chat_pb2.ChatCompletion)
    assert reply.choices[0].message.content == "hello there relay"
    assert reply.usage.completion_tokens == 3
    sent = services.inference.requests[-1]
    assert sent.model == "gpt-test" and sent.temperature == pytest.approx(0.2)
    assert sent.stream_options.include_usage is True
    # A parameter the typed schema lacks travels in extra_body instead of failing.
    assert json_format.MessageToDict(sent.extra_body) == {"top_k": 40}


def test_a_request_message_a_mapping_and_keywords_build_the_same_request(client: Relay, services: Services) -> None:
    message = ChatCompletionRequest(model="m", messages=[ChatMessage(role="user", content=struct_pb2.Value(string_value="hi"))])
    client.inference.create_chat_completion(message)
    client.inference.create_chat_completion({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    client.inference.create_chat_completion(model="m", messages=[{"role": "user", "content": "hi"}])
    first, second, third = services.inference.requests
    assert first == second == third


@pytest.mark.parametrize(
    ("args", "kwargs", "needle"),
    [
        ((), {"modle": "m"}, "modle"),
        ((ChatCompletionRequest(model="m"),), {"model": "m"}, "not both"),
        (({"model": "m"},), {"model": "m"}, "not both"),
        ((ChatMessage(role="user"),), {}, "relay.v1.ChatCompletionRequest"),
        ((), {"temperature": "hot"}, "ChatCompletionRequest"),
    ],
)
def test_bad_requests_fail_before_reaching_the_server(
    client: Relay, faults: Faults, args: tuple[object, ...], kwargs: dict[str, object], needle: str
) -> None:
    with pytest.raises(TypeError, match=needle):
        client.inference.create_chat_completion(*args, **kwargs)  # type: ignore[arg-type]
    assert faults.calls["CreateChatCompletion"] == 0


def test_chat_stream_yields_typed_chunks_and_the_request_id(client: Relay) -> None:
    with client.chat_stream("gpt-test", USER_HELLO) as stream:
        chunks = list(stream)
        assert stream.request_id == REQUEST_ID
    assert all(isinstance(c, chat_pb2.ChatCompletionChunk) for c in chunks)
    assert "".join(c.choices[0].delta.content for c in chunks) == "hello there relay"


def test_a_stream_that_fails_after_its_first_message_raises_and_is_not_repeated(client: Relay, faults: Faults) -> None:
    stream = client.chat_stream("fail-after-first", USER_HELLO)
    assert next(stream).choices[0].delta.content == "hello"
    with pytest.raises(NoProviderAvailableError) as info:
        next(stream)
    assert info.value.request_id == REQUEST_ID
    assert faults.calls["StreamChatCompletion"] == 1


def test_a_read_stream_is_retried_before_its_first_message_only(
    client: Relay, faults: Faults, sleeps: object, retry_policy: RetryPolicy
) -> None:
    from relay_server.errors import ErrorKind
    from relay_server.errors import RelayError as ServerError

    spec = MethodSpec(PROBE_STREAM, chat_pb2.ChatCompletionRequest, chat_pb2.ChatCompletionChunk)
    invoker = SyncInvoker(client.channel, Credentials(API_KEY), 5.0, retry_policy)
    faults.fail_next("ListChunks", 1, ServerError(ErrorKind.NO_PROVIDER_AVAILABLE, "warming up"))
    chunks = list(invoker.stream(spec, None, {"model": "m", "messages": USER_HELLO}, None, None))
    assert len(chunks) == 3 and faults.calls["ListChunks"] == 2
    # After the first message the same failure is raised, although the RPC is a read.
    stream = invoker.stream(spec, None, {"model": "fail-after-first", "messages": USER_HELLO}, None, None)
    next(stream)
    with pytest.raises(NoProviderAvailableError):
        next(stream)
    assert faults.calls["ListChunks"] == 3


def test_closing_or_cancelling_a_stream_early_ends_it_quietly(client: Relay) -> None:
    words = [{"role": "user", "content": "one two three four"}]
    stream = client.chat_stream("gpt-test", words)
    assert next(stream).choices[0].delta.content == "one"
    stream.close()
    assert list(stream) == []
    cancelled = client.chat_stream("gpt-test", words)
    next(cancelled)
    cancelled.cancel()
    assert len(list(cancelled)) <= 3  # what had already arrived, then the end: no error


def test_embed_accepts_plain_python_input(client: Relay, services: Services) -> None:
    reply = client.embed("embed-test", ["ab", "abcd"], dimensions=2)
    vectors = [[v.number_value for v in item.embedding.list_value.values] for item in reply.data]
    assert vectors == [[2.0, 1.0], [4.0, 1.0]]
    assert services.inference.requests[-1].dimensions == 2


def test_an_rpc_the_server_lacks_raises_unimplemented(client: Relay) -> None:
    with pytest.raises(UnimplementedError) as info:
        client.inference.create_completion(model="m", prompt="hi")
    assert info.value.code is grpc.StatusCode.UNIMPLEMENTED and info.value.reason is None


def test_per_call_timeout_overrides_the_default(client: Relay) -> None:
    with pytest.raises(RequestTimeoutError) as info:
        client.chat("slow", USER_HELLO, timeout=0.05)
    assert isinstance(info.value, TimeoutError)
    assert info.value.code is grpc.StatusCode.DEADLINE_EXCEEDED


def test_credentials_go_to_the_right_plane_and_extra_metadata_is_sent(client: Relay, faults: Faults) -> None:
    client.chat("gpt-test", USER_HELLO, extra_metadata=[("x-relay-trace", "t1")])
    client.api_keys.get_api_key(key_id="key_1")
    client.api_keys.get_api_key(key_id="key_1", extra_metadata=[("authorization", "Bearer rly_other")])
    data_plane, admin, override = faults.metadata
    assert data_plane["authorization"] == f"Bearer {API_KEY}" and data_plane["x-relay-trace"] == "t1"
    assert admin["authorization"] == f"Bearer {ADMIN_TOKEN}"
    assert override["authorization"] == "Bearer rly_other"


def test_admin_calls_fall_back_to_the_api_key_and_anonymous_clients_send_none(
    grpc_addr: str, services: Services, faults: Faults
) -> None:
    with Relay(grpc_addr, api_key=API_KEY) as management:
        management.api_keys.get_api_key(key_id="key_1")
    with Relay(grpc_addr) as anonymous:
        anonymous.api_keys.get_api_key(key_id="key_1")
    assert faults.metadata[0]["authorization"] == f"Bearer {API_KEY}"
    assert "authorization" not in faults.metadata[1]


def test_a_closed_client_refuses_calls(grpc_addr: str, services: Services) -> None:
    relay = Relay(grpc_addr, api_key=API_KEY)
    relay.close()
    with pytest.raises(ValueError):
        relay.api_keys.get_api_key(key_id="key_1")


def test_negative_max_retries_is_rejected() -> None:
    with pytest.raises(ValueError):
        Relay(max_retries=-1)


def test_extra_metadata_may_be_a_mapping() -> None:
    from relay_sdk._wrappers import Credentials

    spec = type("Spec", (), {"admin": False})()
    md = Credentials(api_key="rly_test_sk_x").metadata(spec, {"x-relay-test-error": "provider_error"})  # type: ignore[arg-type]
    assert md == (("authorization", "Bearer rly_test_sk_x"), ("x-relay-test-error", "provider_error"))
