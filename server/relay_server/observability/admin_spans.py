"""A trace span for every control-plane RPC (``relay.admin.v1``), as a gRPC
server interceptor: the admin servicers stay free of tracing code, and a new
admin service is traced without anyone remembering to.

The span is a SERVER span named ``relay.admin.v1.Service/Method`` with the
``rpc.*`` attributes, continuing the caller's ``traceparent``; a failed call
(an abort) marks it ERROR with the gRPC status.  Only installed when tracing
is on.
"""

from __future__ import annotations

from typing import Any

import grpc

from relay_server.observability.tracing import Tracing

ADMIN_PREFIX = "/relay.admin."


class AdminSpans(grpc.aio.ServerInterceptor):
    def __init__(self, tracing: Tracing) -> None:
        self._tracing = tracing

    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        method = details.method
        if handler is None or not method.startswith(ADMIN_PREFIX) or handler.unary_unary is None:
            return handler
        inner, tracing = handler.unary_unary, self._tracing

        async def traced(request: Any, context: grpc.aio.ServicerContext) -> Any:
            metadata = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
            with tracing.rpc_span(method, metadata) as span:
                try:
                    return await inner(request, context)
                except BaseException:
                    from opentelemetry.trace import Status, StatusCode  # noqa: PLC0415 (tracing is on)

                    code = context.code() if hasattr(context, "code") else None
                    name = code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
                    span.set_attribute("rpc.grpc.status_code", code.value[0] if isinstance(code, grpc.StatusCode) else 2)
                    span.set_status(Status(StatusCode.ERROR, name))
                    raise

        return grpc.unary_unary_rpc_method_handler(
            traced, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
        )


def admin_interceptors(tracing: Tracing | None) -> list[grpc.aio.ServerInterceptor]:
    return [AdminSpans(tracing)] if tracing is not None else []
