"""Control-plane RPCs are traced: one SERVER span per relay.admin.v1 call (continuing the
caller's traceparent, ERROR with the gRPC status on failure); other services get none."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from relay_server.observability.admin_spans import admin_interceptors
from relay_server.observability.tracing import build_tracing
from relay_server.settings import Settings

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


async def _ok(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return b"ok"


async def _denied(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    await context.abort(grpc.StatusCode.PERMISSION_DENIED, "no")
    return b""  # pragma: no cover


def _handler(service: str, methods: dict) -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        service, {name: grpc.unary_unary_rpc_method_handler(fn) for name, fn in methods.items()}
    )


@pytest_asyncio.fixture
async def served() -> AsyncIterator[tuple[str, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    tracing = build_tracing(Settings(), exporter)
    server = grpc.aio.server(interceptors=admin_interceptors(tracing))
    server.add_generic_rpc_handlers((
        _handler("relay.admin.v1.TenantService", {"GetTenant": _ok, "DeleteTenant": _denied}),
        _handler("relay.v1.InferenceService", {"CreateChatCompletion": _ok}),
    ))  # fmt: skip
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}", exporter
    await server.stop(None)


@pytest.mark.asyncio
async def test_admin_calls_get_server_spans_and_inference_none(served: tuple[str, InMemorySpanExporter]) -> None:
    addr, exporter = served
    async with grpc.aio.insecure_channel(addr) as channel:
        def call(path: str):  # noqa: ANN202
            return channel.unary_unary(path)

        parent = (("traceparent", f"00-{TRACE_ID}-00f067aa0ba902b7-01"),)
        assert await call("/relay.admin.v1.TenantService/GetTenant")(b"", metadata=parent) == b"ok"
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call("/relay.admin.v1.TenantService/DeleteTenant")(b"")
        assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert await call("/relay.v1.InferenceService/CreateChatCompletion")(b"") == b"ok"
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {"relay.admin.v1.TenantService/GetTenant", "relay.admin.v1.TenantService/DeleteTenant"}
    ok, denied = spans["relay.admin.v1.TenantService/GetTenant"], spans["relay.admin.v1.TenantService/DeleteTenant"]
    assert ok.kind is SpanKind.SERVER and format(ok.context.trace_id, "032x") == TRACE_ID
    assert ok.attributes["rpc.system"] == "grpc" and ok.attributes["rpc.method"] == "GetTenant"
    assert ok.status.status_code is not StatusCode.ERROR
    assert denied.status.status_code is StatusCode.ERROR and denied.attributes["rpc.grpc.status_code"] == 7


def test_no_interceptor_without_tracing() -> None:
    assert admin_interceptors(None) == []
