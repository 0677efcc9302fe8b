"""Mistral La Plateforme: the OpenAI passthrough with Mistral's differences.

Mistral validates request bodies strictly (unknown fields are a 422), names a
few parameters differently, and has no legacy completions endpoint.  Policy for
OpenAI-only parameters: purely advisory ones are dropped; ones that change the
answer the client expects are refused, so a client never silently gets less.
Its streams put ``usage`` on the last content chunk; the shared stream
translator already moves it into the final usage chunk.
"""

from __future__ import annotations

from typing import Any

from relay_server.domain.provider import ProviderCall
from relay_server.providers.openai_compat import OpenAICompatTranslator
from relay_server.providers.translator import UpstreamRequest, unsupported

MISTRAL_BASE_URL = "https://api.mistral.ai/v1"

# Advisory OpenAI fields Mistral rejects as unknown.  stream_options included:
# Mistral reports usage on every stream without being asked.
_DROPPED = ("stream_options", "user", "store", "metadata", "service_tier")
# Fields whose absence would change the answer: refuse rather than ignore.
_REFUSED = ("logprobs", "top_logprobs", "logit_bias")


class MistralTranslator(OpenAICompatTranslator):
    def __init__(self, name: str = "mistral", base_url: str = MISTRAL_BASE_URL) -> None:
        super().__init__(name, base_url)

    def request(self, call: ProviderCall, *, stream: bool) -> UpstreamRequest:
        if call.kind == "completion":
            raise unsupported("this model does not support the legacy completions endpoint")
        return super().request(call, stream=stream)

    def prepare_body(self, call: ProviderCall, *, stream: bool) -> dict[str, Any]:
        body = super().prepare_body(call, stream=stream)
        if call.kind == "embedding":
            return body
        for name in _REFUSED:
            if body.get(name) not in (None, False):
                raise unsupported(f"'{name}' is not supported by this model", param=name)
        for name in _DROPPED:
            body.pop(name, None)
        # Same meaning, Mistral's names.
        if "seed" in body:
            body["random_seed"] = body.pop("seed")
        if "max_completion_tokens" in body:
            limit = body.pop("max_completion_tokens")
            body.setdefault("max_tokens", limit)
        return body
