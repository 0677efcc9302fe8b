"""The request guard's text check reaches every string: nested, repeated, map keys and values, Struct."""

from __future__ import annotations

from google.protobuf import struct_pb2
from google.protobuf.message import Message

from relay_server.api.request_guard import _Invalid, guard_deserializer, nul_field


def _struct(value: object) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(value)  # type: ignore[arg-type]
    return s


def test_clean_messages_pass() -> None:
    assert nul_field(_struct({"a": ["b", {"c": "d"}], "e": 1})) is None


def test_nul_is_found_at_any_depth_with_its_path() -> None:
    assert nul_field(_struct({"a\x00": "x"})) == "fields"  # a map key
    assert nul_field(_struct({"a": "x\x00"})) == "fields.a.string_value"
    assert nul_field(_struct({"a": ["ok", {"c": "d\x00"}]})) == "fields.a.list_value.values[1].struct_value.fields.c.string_value"


def test_guarded_deserializer_marks_instead_of_raising() -> None:
    parse = guard_deserializer(struct_pb2.Struct.FromString)
    assert parse is not None
    assert isinstance(parse(b"\xff\xff\xff"), _Invalid)
    bad = parse(_struct({"k": "v\x00"}).SerializeToString())
    assert isinstance(bad, _Invalid) and bad.error.param == "fields.k.string_value"
    good = parse(_struct({"k": "v"}).SerializeToString())
    assert isinstance(good, Message) and good == _struct({"k": "v"})


def test_non_finite_numbers_are_found() -> None:
    for bad in (float("nan"), float("inf"), -float("inf")):
        assert nul_field(_struct({"a": [1.0, {"b": bad}]})) == "fields.a.list_value.values[1].struct_value.fields.b.number_value"
    assert nul_field(_struct({"a": 1e308})) is None


def test_out_of_range_timestamps_and_durations_are_found() -> None:
    from relay_proto.relay.admin.v1 import tenants_pb2

    ok = tenants_pb2.SetFeatureOverrideRequest(feature="f")
    ok.expire_time.FromSeconds(1_900_000_000)
    assert nul_field(ok) is None
    for seconds, nanos in ((2**63 - 1, 0), (0, 2**31 - 1), (0, -1), (-62_135_596_801, 0)):
        bad = tenants_pb2.SetFeatureOverrideRequest(feature="f")
        bad.expire_time.seconds, bad.expire_time.nanos = seconds, nanos
        assert nul_field(bad) == "expire_time"


async def test_generated_registrations_are_served_guarded_through_one_method_table() -> None:
    """Generated ``add_*_to_server`` code registers each method twice (generic + registered); the
    guarded server serves both from its own table and leaves grpc's registered-method path
    (which makes the accept loop wait on one pending call per method) empty."""
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    from relay_server.api.request_guard import GuardedServer
    from relay_server.stack.processes import free_port

    inner = grpc.aio.server()
    registered: list[str] = []
    original = inner.add_registered_method_handlers
    inner.add_registered_method_handlers = lambda name, handlers: (registered.append(name), original(name, handlers))  # type: ignore[method-assign]
    server = GuardedServer(inner)
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    try:
        await servicer.set("relay", health_pb2.HealthCheckResponse.SERVING)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            reply = await stub.Check(health_pb2.HealthCheckRequest(service="relay"), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            try:
                await stub.Check(health_pb2.HealthCheckRequest(service="re\x00lay"), timeout=5)
            except grpc.aio.AioRpcError as err:
                assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert "service" in (err.details() or "")
            else:
                raise AssertionError("a NUL in a text field must be refused by the guard")
            for i in range(3):
                unknown = channel.unary_unary(f"/relay.v1.Nope/Missing{i}")
                try:
                    await unknown(b"", timeout=5)
                except grpc.aio.AioRpcError as err:
                    assert err.code() == grpc.StatusCode.UNIMPLEMENTED
                else:
                    raise AssertionError("an unknown method must stay UNIMPLEMENTED")
    finally:
        await server.stop(None)
    assert registered == []


def test_made_up_method_names_are_not_remembered() -> None:
    """Any client can send any number of method names: the guard keeps only real methods."""
    import grpc

    from relay_server.api.request_guard import _GuardedGenericHandler

    inner = grpc.method_handlers_generic_handler(
        "relay.v1.Echo", {"Say": grpc.unary_unary_rpc_method_handler(lambda request, context: request)}
    )
    guarded = _GuardedGenericHandler(inner)

    class Details(grpc.HandlerCallDetails):
        def __init__(self, method: str) -> None:
            self.method = method
            self.invocation_metadata = ()

    for i in range(100):
        assert guarded.service(Details(f"/made.up/M{i}")) is None
    first = guarded.service(Details("/relay.v1.Echo/Say"))
    assert first is not None and guarded.service(Details("/relay.v1.Echo/Say")) is first
    assert list(guarded._cache) == ["/relay.v1.Echo/Say"]
