"""Anthropic Messages API behind the OpenAI shapes the pipeline speaks.

The translation itself lives in the ``anthropic_openai`` package (both directions of the
pair: this translator uses the OpenAI → Anthropic request and the Anthropic → OpenAI
answers; the Anthropic door uses the other two); this module ties them into one
``Translator``.  ``AnthropicNative`` (``anthropic_native``) is the pair that needs no
translation: the Anthropic door in front of this provider.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson

from relay_server.domain.provider import Credential, ProviderCall
from relay_server.providers.anthropic_openai.responses import openai_response
from relay_server.providers.anthropic_openai.to_anthropic_request import build_body
from relay_server.providers.anthropic_openai.to_openai_chunks import (
    AnthropicStreamTranslator,
)
from relay_server.providers.auth import credential_headers
from relay_server.providers.translator import (
    ProviderFailure,
    UpstreamRequest,
    base_url_for,
    classify_http_error,
    unsupported,
)

ANTHROPIC_BASE_URL = "https://api.anthropic.com/v1"
ANTHROPIC_VERSION = "2023-06-01"


class AnthropicTranslator:
    def __init__(self, name: str = "anthropic", base_url: str = ANTHROPIC_BASE_URL) -> None:
        self.name = name
        self.base_url = base_url

    def request(self, call: ProviderCall, *, stream: bool) -> UpstreamRequest:
        if call.kind == "embedding":
            raise unsupported("this model does not support embeddings", param="model")
        if call.kind != "chat":
            raise unsupported("this model does not support the legacy completions endpoint", param="model")
        body = build_body(call, stream=stream)
        url = base_url_for(call, self.base_url) + "/messages"
        return UpstreamRequest("POST", url, self.headers(call.credential, stream=stream), body)

    def headers(self, credential: Credential | None, *, stream: bool) -> dict[str, str]:
        return {
            "anthropic-version": ANTHROPIC_VERSION,
            "Accept": "text/event-stream" if stream else "application/json",
            **credential_headers(credential, "x-api-key"),
        }

    def response(self, status: int, body: Any, call: ProviderCall) -> dict[str, Any]:
        return openai_response(body, call.provider_model)

    def stream_events(self, call: ProviderCall) -> AnthropicStreamTranslator:
        return AnthropicStreamTranslator(call.provider_model)

    def error(self, status: int, body: bytes, headers: Mapping[str, str]) -> ProviderFailure:
        message, code = "", None
        try:
            parsed = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            parsed = None
            message = body[:500].decode("utf-8", errors="replace").strip()
        error = parsed.get("error") if isinstance(parsed, dict) else None
        if isinstance(error, dict):
            message = str(error.get("message") or "")
            code = error.get("type")
        return classify_http_error(status, message=message, code=code, param=None, headers=headers)

    def models_request(self, credential: Credential | None) -> UpstreamRequest:
        base = ((credential.base_url if credential else "") or self.base_url).rstrip("/")
        return UpstreamRequest("GET", base + "/models", self.headers(credential, stream=False))

    def models_response(self, body: Any) -> dict[str, Any]:
        data = []
        for model in body.get("data") or []:
            created = 0
            try:
                created = int(datetime.fromisoformat(str(model.get("created_at"))).timestamp())
            except ValueError:
                pass
            data.append({"id": model.get("id"), "object": "model", "created": created, "owned_by": self.name})
        return {"object": "list", "data": data}
