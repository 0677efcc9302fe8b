"""No stubs in the API: every RPC of the served descriptor answers something
other than UNIMPLEMENTED (to an empty, unauthenticated request), with Redis and
without it; and reflection is served as grpc.reflection.v1 and v1alpha."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2

from relay_server.stack.redis import RedisHandle
from tests.support.pg import PgCluster
from tests.support.stack import REPO, RelayStack, start_stack

pytestmark = pytest.mark.e2e


def _methods() -> list[tuple[str, bool]]:
    """(/package.Service/Method, server_streaming) for every RPC Envoy and the SDKs are built from."""
    files = descriptor_pb2.FileDescriptorSet.FromString((REPO / "envoy" / "relay.pb").read_bytes())
    found = []
    for file in files.file:
        if not file.package.startswith("relay."):
            continue
        for service in file.service:
            for method in service.method:
                assert not method.client_streaming, "a client-streaming RPC needs its own call here"
                found.append((f"/{file.package}.{service.name}/{method.name}", method.server_streaming))
    assert len(found) > 30  # the whole API, not an empty descriptor
    return found


def _status(channel: grpc.Channel, path: str, streaming: bool) -> grpc.StatusCode:
    identity = lambda b: b  # noqa: E731 (raw bytes: an empty message is zero bytes)
    try:
        if streaming:
            for _ in channel.unary_stream(path, request_serializer=identity, response_deserializer=identity)(b"", timeout=10):
                pass
        else:
            channel.unary_unary(path, request_serializer=identity, response_deserializer=identity)(b"", timeout=10)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def _sweep(addr: str) -> dict[str, grpc.StatusCode]:
    with grpc.insecure_channel(addr) as channel:
        return {path: _status(channel, path, streaming) for path, streaming in _methods()}


def test_no_rpc_answers_unimplemented_with_redis(relay: RelayStack) -> None:
    answers = _sweep(relay.grpc_addr)
    assert not [p for p, code in answers.items() if code is grpc.StatusCode.UNIMPLEMENTED]
    # Nothing runs without a credential: unauthenticated callers are refused (or told what is missing).
    allowed = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}
    probes = {"/relay.v1.HealthService/GetLiveness", "/relay.v1.HealthService/GetReadiness"}  # public by design
    assert {p: c for p, c in answers.items() if c not in allowed and p not in probes} == {}
    assert {answers[p] for p in probes} == {grpc.StatusCode.OK}


@pytest.fixture(scope="module")
def bare(pg_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayStack]:
    db = pg_cluster.create_database()
    relay = start_stack(db, Path(tmp_path_factory.mktemp("relay-bare")), redis_url="")
    yield relay
    relay.stop()
    pg_cluster.drop_database(db)


def test_without_redis_threads_say_what_they_need(bare: RelayStack, redis_server: RedisHandle) -> None:
    answers = _sweep(bare.grpc_addr)
    assert not [p for p, code in answers.items() if code is grpc.StatusCode.UNIMPLEMENTED]
    with grpc.insecure_channel(bare.grpc_addr) as channel:
        call = channel.unary_unary("/relay.v1.ThreadService/CreateThread", request_serializer=lambda b: b,
                                   response_deserializer=lambda b: b)  # fmt: skip
        with pytest.raises(grpc.RpcError) as info:
            call(b"", metadata=(("authorization", f"Bearer {bare.test_key}"),), timeout=10)
    assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION and "REDIS_URL" in (info.value.details() or "")


@pytest.mark.parametrize("service", ["grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"])
def test_reflection_is_served_as_v1_and_v1alpha(relay: RelayStack, service: str) -> None:
    with grpc.insecure_channel(relay.grpc_addr) as channel:
        info = channel.stream_stream(
            f"/{service}/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        requests = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="relay.admin.v1.ModelCatalogService"),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="grpc.reflection.v1.ServerReflection"),
        ]
        listed, catalog, v1 = list(info(iter(requests), timeout=10))
    names = {s.name for s in listed.list_services_response.service}
    assert {"relay.admin.v1.ModelCatalogService", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection"} <= names  # fmt: skip
    files = [descriptor_pb2.FileDescriptorProto.FromString(b) for b in catalog.file_descriptor_response.file_descriptor_proto]
    assert any(f.name == "relay/admin/v1/catalog.proto" for f in files)
    v1_files = [descriptor_pb2.FileDescriptorProto.FromString(b) for b in v1.file_descriptor_response.file_descriptor_proto]
    assert [f.package for f in v1_files] == ["grpc.reflection.v1"]


def test_health_and_ready_over_http_through_envoy(relay: RelayStack, bare: RelayStack) -> None:
    import httpx

    root = relay.base_url.removesuffix("/v1")
    live = httpx.get(f"{root}/health", timeout=10)
    assert live.status_code == 200 and live.json() == {"status": "ok"}
    ready = httpx.get(f"{root}/ready", timeout=10)
    assert ready.status_code == 200, ready.text
    assert ready.json() == {"status": "ok", "checks": {"postgres": "ok", "redis": "ok"}}
    # Without Redis configured, Redis is not a readiness condition.
    ready = httpx.get(f"{bare.base_url.removesuffix('/v1')}/ready", timeout=10)
    assert ready.json() == {"status": "ok", "checks": {"postgres": "ok", "redis": "not_configured"}}


def test_ready_is_503_when_redis_does_not_answer(pg_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> None:
    import httpx

    from relay_server.stack.processes import free_port

    db = pg_cluster.create_database()
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    relay = start_stack(db, Path(tmp_path_factory.mktemp("relay-noredis")), redis_url=dead_redis)
    try:
        root = relay.base_url.removesuffix("/v1")
        assert httpx.get(f"{root}/health", timeout=10).status_code == 200  # alive: a restart would not help
        ready = httpx.get(f"{root}/ready", timeout=10)
        assert ready.status_code == 503
        assert ready.json() == {"status": "unavailable", "checks": {"postgres": "ok", "redis": "unavailable"}}
    finally:
        relay.stop()
        pg_cluster.drop_database(db)
