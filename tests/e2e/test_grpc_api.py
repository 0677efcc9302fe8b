"""The native gRPC side: typed inference over the same pipeline, reflection, health, operator-only catalog RPCs."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from relay_proto.relay.admin.v1 import catalog_pb2, catalog_pb2_grpc
from relay_proto.relay.v1 import chat_pb2, embeddings_pb2, inference_service_pb2_grpc
from tests.support.stack import RelayStack

pytestmark = pytest.mark.e2e


@pytest.fixture
def channel(relay: RelayStack) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(relay.grpc_addr) as ch:
        yield ch


def _auth(relay: RelayStack) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {relay.test_key}"),)


def _request(**kw) -> chat_pb2.ChatCompletionRequest:
    return chat_pb2.ChatCompletionRequest(
        model="gpt-4o-mini", messages=[chat_pb2.ChatMessage(role="user", content=struct_pb2.Value(string_value="hi"))], **kw
    )


def test_typed_chat_unary_and_stream_agree(relay: RelayStack, channel: grpc.Channel) -> None:
    stub = inference_service_pb2_grpc.InferenceServiceStub(channel)
    reply = stub.CreateChatCompletion(_request(), metadata=_auth(relay))
    assert reply.object == "chat.completion" and reply.choices[0].message.content
    chunks = list(
        stub.StreamChatCompletion(_request(stream_options=chat_pb2.StreamOptions(include_usage=True)), metadata=_auth(relay))
    )
    text = "".join(c.choices[0].delta.content for c in chunks if c.choices)
    assert text == reply.choices[0].message.content
    assert chunks[-1].usage.total_tokens == reply.usage.total_tokens


def test_typed_extra_body_and_seed_reach_the_pipeline(relay: RelayStack, channel: grpc.Channel) -> None:
    stub = inference_service_pb2_grpc.InferenceServiceStub(channel)
    extra = struct_pb2.Struct()
    extra.update({"max_completion_tokens": 2})
    reply = stub.CreateChatCompletion(_request(seed=42, extra_body=extra), metadata=_auth(relay))
    assert reply.choices[0].finish_reason == "length" and reply.usage.completion_tokens == 2


def test_typed_embeddings(relay: RelayStack, channel: grpc.Channel) -> None:
    stub = inference_service_pb2_grpc.InferenceServiceStub(channel)
    request = embeddings_pb2.EmbeddingRequest(
        model="text-embedding-3-small", input=struct_pb2.Value(string_value="hi"), encoding_format="float", dimensions=4
    )
    reply = stub.CreateEmbedding(request, metadata=_auth(relay))
    assert len(reply.data[0].embedding.list_value.values) == 4


def test_grpc_errors_carry_status_and_error_info(relay: RelayStack, channel: grpc.Channel) -> None:
    stub = inference_service_pb2_grpc.InferenceServiceStub(channel)
    with pytest.raises(grpc.RpcError) as info:
        stub.CreateChatCompletion(_request(), metadata=(("authorization", "Bearer rly_test_sk_" + "z" * 43),))
    assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
    trailers = dict(info.value.trailing_metadata())
    status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    detail = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(detail)
    assert detail.reason == "INVALID_API_KEY" and detail.metadata["http_status"] == "401"
    with pytest.raises(grpc.RpcError) as info:
        stub.CreateChatCompletion(_request(), metadata=(*_auth(relay), ("x-relay-test-error", "spend_cap_exceeded")))
    assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION


def test_reflection_lists_every_service(channel: grpc.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert {
        "relay.v1.OpenAIService",
        "relay.v1.InferenceService",
        "relay.admin.v1.ApiKeyService",
        "relay.admin.v1.TenantService",
        "relay.admin.v1.UsageService",
        "relay.admin.v1.ModelCatalogService",
        "grpc.health.v1.Health",
    } <= names


def test_health_reports_serving(channel: grpc.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", "relay.v1.InferenceService"):
        assert stub.Check(health_pb2.HealthCheckRequest(service=service)).status == health_pb2.HealthCheckResponse.SERVING


def test_admin_catalog_requires_the_admin_token(relay: RelayStack, channel: grpc.Channel) -> None:
    stub = catalog_pb2_grpc.ModelCatalogServiceStub(channel)
    with pytest.raises(grpc.RpcError) as info:
        stub.ListCatalogModels(catalog_pb2.ListCatalogModelsRequest(), metadata=_auth(relay))
    assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED  # a tenant's management key is not an operator
    with pytest.raises(grpc.RpcError) as info:
        stub.ListCatalogModels(catalog_pb2.ListCatalogModelsRequest())
    assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
    admin = (("authorization", f"Bearer {relay.admin_token}"),)
    first = stub.ListCatalogModels(catalog_pb2.ListCatalogModelsRequest(page_size=5), metadata=admin)
    assert len(first.models) == 5 and first.next_page_token
    rest = stub.ListCatalogModels(
        catalog_pb2.ListCatalogModelsRequest(page_size=1000, page_token=first.next_page_token), metadata=admin
    )
    names = [m.relay_name for m in (*first.models, *rest.models)]
    assert names == sorted(set(names)) and "gpt-4o-mini" in names


def test_public_rest_port_does_not_proxy_native_grpc(relay: RelayStack) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{relay.http_port}") as ch:
        with pytest.raises(grpc.RpcError):
            health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)


def test_typed_answers_carry_the_same_headers_as_rest(relay: RelayStack, channel: grpc.Channel) -> None:
    stub = inference_service_pb2_grpc.InferenceServiceStub(channel)
    _, call = stub.CreateChatCompletion.with_call(_request(), metadata=_auth(relay))
    unary = dict(call.initial_metadata())
    stream = stub.StreamChatCompletion(_request(), metadata=_auth(relay))
    list(stream)
    streamed = dict(stream.initial_metadata())
    for headers in (unary, streamed):
        assert headers["x-request-id"].startswith("req_")
        assert int(headers["x-ratelimit-remaining-requests"]) >= 0 and "x-ratelimit-limit-tokens" in headers
        assert float(headers["x-relay-overhead-ms"]) >= 0
