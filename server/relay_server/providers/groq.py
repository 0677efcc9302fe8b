"""Groq: the OpenAI passthrough with Groq's documented differences.

Groq answers 400 to ``logprobs``, ``top_logprobs``, ``logit_bias``, ``n`` other
than 1 and ``messages[].name``, and serves neither legacy completions nor
embeddings.  The name is advisory and dropped; the rest would change the answer
and is refused up front with a clear message.  Older Groq streams report usage
in ``x_groq.usage`` on the last chunk; ``x_groq`` is Groq's own extension and
never reaches the client.
"""

from __future__ import annotations

from typing import Any

from relay_server.domain.provider import ProviderCall
from relay_server.providers.openai_compat import OpenAICompatTranslator, OpenAIStreamTranslator
from relay_server.providers.translator import UpstreamRequest, unsupported

GROQ_BASE_URL = "https://api.groq.com/openai/v1"

_REFUSED = ("logprobs", "top_logprobs", "logit_bias")


class GroqTranslator(OpenAICompatTranslator):
    def __init__(self, name: str = "groq", base_url: str = GROQ_BASE_URL) -> None:
        super().__init__(name, base_url)

    def request(self, call: ProviderCall, *, stream: bool) -> UpstreamRequest:
        if call.kind != "chat":
            raise unsupported(f"this model does not support the {call.kind} endpoint")
        return super().request(call, stream=stream)

    def prepare_body(self, call: ProviderCall, *, stream: bool) -> dict[str, Any]:
        body = super().prepare_body(call, stream=stream)
        for name in _REFUSED:
            if body.get(name) not in (None, False):
                raise unsupported(f"'{name}' is not supported by this model", param=name)
        if body.get("n") not in (None, 1):
            raise unsupported("this model supports only n=1", param="n")
        messages = body.get("messages")
        if isinstance(messages, list) and any(isinstance(m, dict) and "name" in m for m in messages):
            # New list and new message dicts: call.body's messages stay as they were.
            body["messages"] = [
                {k: v for k, v in m.items() if k != "name"} if isinstance(m, dict) else m for m in messages
            ]
        return body

    def response(self, status: int, body: Any, call: ProviderCall) -> dict[str, Any]:
        body.pop("x_groq", None)
        return body

    def stream_events(self, call: ProviderCall) -> OpenAIStreamTranslator:
        return GroqStreamTranslator(require_done_marker=self.require_done_marker)


class GroqStreamTranslator(OpenAIStreamTranslator):
    __slots__ = ()

    def usage_of(self, chunk: dict[str, Any]) -> dict[str, Any] | None:
        extension = chunk.pop("x_groq", None)
        if isinstance(extension, dict) and isinstance(extension.get("usage"), dict):
            return extension["usage"]
        return super().usage_of(chunk)
