"""Bad bytes and bad text in ids, filters and stored fields: a clean 400 / INVALID_ARGUMENT, never a 5xx.

Every method of every service the server registers is sent bytes that do not
decode; REST routes get NUL characters and percent-encoded invalid UTF-8 in
paths, queries and bodies.  None may answer 5xx, UNKNOWN or INTERNAL, or name
Python classes in the message.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from google.protobuf import descriptor_pb2

from tests.e2e.admin_helpers import rest
from tests.support.stack import RelayStack

pytestmark = pytest.mark.e2e

DESCRIPTOR = Path(__file__).resolve().parents[2] / "envoy" / "relay.pb"
GARBAGE = b"\xff\xff\xff\xff"  # an unterminated varint: no message type decodes it


def _methods() -> list[tuple[str, bool, bool]]:
    files = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR.read_bytes())
    found = [("/grpc.health.v1.Health/Check", False, False),
             ("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", True, True)]
    for file in files.file:
        if not file.package.startswith("relay."):
            continue
        for service in file.service:
            for method in service.method:
                found.append((f"/{file.package}.{service.name}/{method.name}", method.client_streaming, method.server_streaming))
    return found


METHODS = _methods()


@pytest.fixture(scope="module")
def channel(relay: RelayStack) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(relay.grpc_addr) as ch:
        yield ch


def test_every_method_is_covered() -> None:
    assert len(METHODS) > 40


@pytest.mark.parametrize(("method", "client_streaming", "server_streaming"), METHODS, ids=[m[0] for m in METHODS])
def test_undecodable_message_is_invalid_argument_on_every_method(
    relay: RelayStack, channel: grpc.Channel, method: str, client_streaming: bool, server_streaming: bool
) -> None:
    metadata = (("authorization", f"Bearer {relay.admin_token}"),)
    kind = {(False, False): channel.unary_unary, (False, True): channel.unary_stream,
            (True, False): channel.stream_unary, (True, True): channel.stream_stream}[(client_streaming, server_streaming)]  # fmt: skip
    call = kind(method)
    request = iter([GARBAGE]) if client_streaming else GARBAGE
    with pytest.raises(grpc.RpcError) as failure:
        result = call(request, timeout=10, metadata=metadata)
        if server_streaming:
            list(result)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT, failure.value.details()
    assert failure.value.details() == "Invalid request: the request message could not be decoded."


def _assert_clean_400(response: httpx.Response) -> dict:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    for internal in ("class", "Error", "relay.", "Traceback", "_pb2"):
        assert internal not in error["message"], error["message"]
    return error


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/tenants/x%00", None),
        ("GET", "/v1/keys/key_%00", None),
        ("GET", "/v1/keys?end_user_id=a%00b", None),
        ("GET", "/v1/threads?end_user_id=a%00b", None),
        ("GET", "/v1/audit-events?action=a%00", None),
        ("GET", "/v1/models/gpt%00", None),
        ("POST", "/v1/threads", {"title": "a\u0000b"}),
        ("POST", "/v1/tenants", {"slug": "acme", "name": "A\u0000", "owner_email": "o@acme.test"}),
        ("POST", "/v1/tenants/ten_x/members", {"email": "m@acme.test", "name": "M\u0000"}),
    ],
)
def test_nul_in_ids_filters_and_text_is_a_400(relay: RelayStack, method: str, path: str, body: dict | None) -> None:
    token = relay.test_key if "/threads" in path or "/models" in path else relay.admin_token
    with rest(relay, token) as c:
        error = _assert_clean_400(c.request(method, path, json=body))
    assert "NUL" in error["message"]


@pytest.mark.parametrize("path", ["/v1/tenants/x%ff", "/v1/models/x%c3%28", "/v1/tenants?page_token=%ff%fe",
                                  "/v1/threads?end_user_id=%80"])  # fmt: skip
def test_invalid_utf8_in_path_or_query_is_a_400_without_internals(relay: RelayStack, path: str) -> None:
    token = relay.test_key if "/threads" in path or "/models" in path else relay.admin_token
    with rest(relay, token) as c:
        error = _assert_clean_400(c.get(path))
    assert "UTF-8" in error["message"]


CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize("metadata", ['{"a":"b\\u0000c"}', '{"a\\u0000":"b"}'])
def test_metadata_the_log_cannot_store_is_refused_before_dispatch(http: httpx.Client, metadata: str) -> None:
    response = http.post("/chat/completions", json=CHAT, headers={"x-relay-metadata": metadata})
    error = _assert_clean_400(response)
    assert error["code"] == "invalid_header" and "NUL" in error["message"]


def test_a_request_whose_text_postgres_refuses_is_still_logged(relay: RelayStack, http: httpx.Client) -> None:
    import time

    import psycopg

    response = http.post("/chat/completions", json={**CHAT, "model": "gpt-4o-mini\u0000x"})
    assert response.status_code == 404, response.text
    request_id = response.headers["x-request-id"]
    deadline = time.monotonic() + 20
    while True:
        with psycopg.connect(relay.db.owner_dsn) as conn:
            row = conn.execute("SELECT requested_model FROM requests WHERE id = %s", (request_id,)).fetchone()
        if row is not None or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert row is not None, "the request's log row never reached Postgres"
    assert row[0] == "gpt-4o-mini\ufffdx"


@pytest.mark.parametrize("name", ["m" * 20_000, "é" * 20_000, "\u2028" * 8000 + "x" * 40_000])
@pytest.mark.parametrize("stream", [False, True])
def test_a_long_unknown_model_is_a_404_with_the_name_clipped(http: httpx.Client, name: str, stream: bool) -> None:
    response = http.post("/chat/completions", json={**CHAT, "model": name, "stream": stream})
    assert response.status_code == 404, response.text[:500]
    error = response.json()["error"]
    assert error["code"] == "model_not_found"
    assert name[:200] in error["message"] and "more characters" in error["message"]
    assert len(error["message"]) < 500


def test_a_long_unknown_model_in_the_path_is_a_404(http: httpx.Client) -> None:
    response = http.get("/models/" + "m" * 20_000)
    assert response.status_code == 404, response.text[:500]
    assert len(response.json()["error"]["message"]) < 500


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_numbers_from_grpc_clients_are_invalid_argument(relay: RelayStack, channel: grpc.Channel, bad: float) -> None:
    from google.protobuf import struct_pb2

    from relay_proto.relay.v1 import chat_pb2, embeddings_pb2, inference_service_pb2_grpc

    stub = inference_service_pb2_grpc.InferenceServiceStub(channel)
    metadata = (("authorization", f"Bearer {relay.test_key}"),)
    hi = [chat_pb2.ChatMessage(role="user", content=struct_pb2.Value(string_value="hi"))]
    calls = [
        lambda: stub.CreateChatCompletion(chat_pb2.ChatCompletionRequest(model="gpt-4o-mini", messages=hi, temperature=bad),
                                          metadata=metadata, timeout=20),
        lambda: stub.CreateChatCompletion(chat_pb2.ChatCompletionRequest(
            model="gpt-4o-mini", messages=[chat_pb2.ChatMessage(role="user", content=struct_pb2.Value(number_value=bad))]),
            metadata=metadata, timeout=20),
        lambda: stub.CreateEmbedding(embeddings_pb2.EmbeddingRequest(model="text-embedding-3-small",
                                                                     input=struct_pb2.Value(number_value=bad)),
                                     metadata=metadata, timeout=20),
    ]  # fmt: skip
    for call in calls:
        with pytest.raises(grpc.RpcError) as failure:
            call()
        assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT, failure.value.details()
        assert "finite" in failure.value.details()
