"""The headers (REST) / initial metadata (gRPC) of a successful inference answer.

One place for every door: ``x-request-id``; ``x-ratelimit-*`` as OpenAI sends
them; ``x-relay-cache`` when the response cache ran; ``x-relay-route`` (the
target that answered, model@provider) and ``x-relay-route-reason`` (why:
the virtual model's strategy, a budget route, a failover; docs/routing.md);
``x-relay-overhead-ms`` (Relay's own time so far, the provider's excluded).
"""

from __future__ import annotations

from relay_server.observability.request_context import overhead_headers
from relay_server.pipeline.inference import Admitted
from relay_server.pipeline.steps.cache import cache_headers

_MAX_HEADER = 256


def _ascii(value: str) -> str:
    # gRPC metadata (and HTTP/1 headers through Envoy) carry printable ASCII only.  Route names
    # almost always are already: two C checks say so; only the rest is filtered per character.
    if value.isascii() and value.isprintable():
        return value[:_MAX_HEADER]
    return "".join(c if " " <= c <= "~" else "?" for c in value)[:_MAX_HEADER]


def route_headers(admitted: Admitted) -> tuple[tuple[str, str], ...]:
    route = admitted.ctx.route
    target = route.target or admitted.entry.relay_name
    reason = route.reason or "model"
    return (("x-relay-route", _ascii(target)), ("x-relay-route-reason", _ascii(reason)))


def success_headers(request_id: str, admitted: Admitted) -> tuple[tuple[str, str], ...]:
    return (
        ("x-request-id", request_id),
        *admitted.headers.items(),
        *cache_headers(admitted),
        *route_headers(admitted),
        *overhead_headers(),
    )
