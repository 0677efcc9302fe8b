"""Counting a request's input tokens without answering it (the Anthropic door's
``count_tokens``; any door may use it).

Exact when a provider of the requested model can count for the request's dialect (its
translator builds a ``count_tokens_request``: Anthropic's ``/v1/messages/count_tokens`` for a
Claude model behind the Anthropic door) and Relay holds a usable key for it: the candidates
are the router's, walked in its order through their gates, so circuits, key cool-downs and
outbound windows apply as to any call.  Otherwise, or when every such call fails, the count is
Relay's own estimate with the model's tokenizer (``usage_estimate``).  Nothing is billed or
logged as a request: counting is free at the providers that offer it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from relay_server.domain.request import RequestContext
from relay_server.errors import RelayError
from relay_server.pipeline.routing.resolve import ModelResolver
from relay_server.pipeline.routing.route import AttemptResult, Router
from relay_server.pipeline.steps.authenticate import Authenticator
from relay_server.pipeline.steps.usage_estimate import estimate_input_tokens

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TokenCount:
    input_tokens: int
    exact: bool
    """True when the provider counted; False for Relay's estimate."""


async def count_input_tokens(
    auth: Authenticator, resolver: ModelResolver, router: Router, body: Mapping[str, Any], metadata: Mapping[str, str],
    request_id: str, *, door: str, native_body: Mapping[str, Any] | None,
) -> TokenCount:
    principal = await auth.authenticate(metadata)
    ctx = RequestContext(request_id=request_id, kind="chat", body=body, metadata=metadata, door=door, native_body=native_body)
    ctx.principal = principal
    entry = resolver.resolve(ctx, str(body.get("model") or ""))  # a virtual model plans from its targets
    estimate = TokenCount(estimate_input_tokens("chat", body, entry.relay_name), exact=False)
    if principal.is_test:
        return estimate
    ctx.model = entry.relay_name
    try:
        attempts = await router.plan(ctx, entry)
    except RelayError:
        return estimate
    for attempt in attempts:
        counter = getattr(attempt.provider, "count_tokens", None)
        if counter is None or (ctx.virtual is None and attempt.entry is not None and attempt.entry.model_id != entry.model_id):
            continue  # a fallback model's count would not be this model's (a virtual model's: its chosen target's)
        ticket = await attempt.gate.open() if attempt.gate is not None else None
        if attempt.gate is not None and ticket is None:
            continue
        call = dataclasses.replace(attempt.call, credential=ticket.credential if ticket is not None else None)
        try:
            counted = await counter(call)
        except Exception:  # noqa: BLE001 (a failed count falls back to the estimate)
            log.warning("provider token count failed", extra={"request_id": request_id}, exc_info=True)
            if ticket is not None:
                await ticket.close(AttemptResult("failure"))
            continue
        if ticket is not None:
            await ticket.close(AttemptResult("success"))
        if counted is None:
            break  # this provider cannot count for this dialect; its others cannot either
        return TokenCount(counted, exact=True)
    return estimate
