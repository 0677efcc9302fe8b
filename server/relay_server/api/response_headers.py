"""The headers (REST) / initial metadata (gRPC) of a successful inference answer.

One place for both facades: ``x-request-id``; ``x-ratelimit-*`` as OpenAI sends
them; ``x-relay-cache`` when the response cache ran; ``x-relay-overhead-ms``
(Relay's own time so far, the provider's excluded).
"""

from __future__ import annotations

from relay_server.observability.request_context import overhead_headers
from relay_server.pipeline.inference import Admitted
from relay_server.pipeline.steps.cache import cache_headers


def success_headers(request_id: str, admitted: Admitted) -> tuple[tuple[str, str], ...]:
    return (
        ("x-request-id", request_id),
        *admitted.headers.items(),
        *cache_headers(admitted),
        *overhead_headers(),
    )
