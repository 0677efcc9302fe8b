"""The Anthropic door in front of the Anthropic provider: no translation at all.

The upstream body is the client's own Messages body (``call.native_body``: every field,
known or not, kept) with ``model`` replaced by the catalog's provider name; the client's
``anthropic-version`` / ``anthropic-beta`` headers go along.  Stream events are re-emitted
byte for byte as ``NativeEvent``s; this module only reads them to take what the pipeline
needs: usage merged from ``message_start`` and ``message_delta`` (input and cache tokens may
arrive on either; counts are cumulative, so a later value replaces an earlier one), reported
once ``message_delta`` has brought the output count, the
generated text (the fallback token count) and the first output (time to first token).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from relay_server.domain.provider import NativeEvent, NativeResponse, ProviderCall
from relay_server.providers.anthropic import AnthropicTranslator
from relay_server.providers.anthropic_openai.tables import (
    error_from_object,
    usage_from_anthropic,
)
from relay_server.providers.sse import SSEEvent
from relay_server.providers.translator import (
    UpstreamRequest,
    base_url_for,
    malformed_failure,
    truncated_failure,
    unsupported,
)

# The client's own headers of this dialect that reach Anthropic as sent.
FORWARDED_HEADERS = ("anthropic-version", "anthropic-beta")
# What /v1/messages/count_tokens accepts of a Messages body (it refuses max_tokens, stream...).
_COUNTED_FIELDS = ("messages", "system", "tools", "tool_choice", "thinking", "mcp_servers")


class AnthropicNative(AnthropicTranslator):
    """``AnthropicTranslator`` for everything but the request and the answers, which pass through."""

    def request(self, call: ProviderCall, *, stream: bool) -> UpstreamRequest:
        if call.kind != "chat" or call.native_body is None:
            raise unsupported("the Anthropic dialect carries only Messages requests")
        body = dict(call.native_body)
        body["model"] = call.provider_model
        if stream:
            body["stream"] = True
        else:
            body.pop("stream", None)
        return UpstreamRequest("POST", base_url_for(call, self.base_url) + "/messages", self._headers(call, stream), body)

    def count_tokens_request(self, call: ProviderCall) -> UpstreamRequest:
        """Anthropic's exact count of the client's request (``/v1/messages/count_tokens``)."""
        native = call.native_body or {}
        body = {"model": call.provider_model, **{k: native[k] for k in _COUNTED_FIELDS if k in native}}
        url = base_url_for(call, self.base_url) + "/messages/count_tokens"
        return UpstreamRequest("POST", url, self._headers(call, False), body)

    def _headers(self, call: ProviderCall, stream: bool) -> dict[str, str]:
        headers = self.headers(call.credential, stream=stream)
        for name in FORWARDED_HEADERS:
            value = (call.native_headers or {}).get(name)
            if value:
                headers[name] = value
        return headers

    def response(self, status: int, body: Any, call: ProviderCall) -> NativeResponse:  # type: ignore[override]
        usage = body.get("usage") if isinstance(body.get("usage"), Mapping) else {}
        return NativeResponse(orjson.dumps(body), usage_from_anthropic(usage), _text_of(body.get("content")))

    def stream_events(self, call: ProviderCall) -> NativeStream:  # type: ignore[override]
        return NativeStream()


def _text_of(content: Any) -> str:
    parts = []
    for block in content if isinstance(content, list) else ():
        if isinstance(block, Mapping):
            for key in ("text", "thinking"):
                if isinstance(block.get(key), str):
                    parts.append(block[key])
            if block.get("type") == "tool_use":
                parts.append(orjson.dumps(block.get("input") or {}).decode())
    return "".join(parts)


_DELTA_TEXT = {"text_delta": "text", "thinking_delta": "thinking", "input_json_delta": "partial_json"}


class NativeStream:
    """Anthropic events in, the same events out (as ``NativeEvent``s)."""

    __slots__ = ("_done", "_final", "_usage")

    def __init__(self) -> None:
        self._done = False
        self._final = False
        self._usage: dict[str, Any] = {}

    @property
    def done(self) -> bool:
        return self._done

    def feed(self, sse: SSEEvent) -> list[NativeEvent]:
        try:
            data = orjson.loads(sse.data)
        except orjson.JSONDecodeError:
            raise malformed_failure(f"stream event is not JSON: {sse.data[:200]!r}") from None
        if not isinstance(data, dict):
            raise malformed_failure("stream event is not a JSON object")
        kind = data.get("type") or sse.event
        text, output = "", False
        match kind:
            case "message_start":
                self._merge((data.get("message") or {}).get("usage"))
            case "message_delta":
                self._merge(data.get("usage"))
                self._final = True
            case "content_block_delta":
                delta = data.get("delta") or {}
                field = _DELTA_TEXT.get(str(delta.get("type")))
                text = str(delta.get(field) or "") if field else ""
                output = True
            case "message_stop":
                self._done = True
            case "error":
                # Replaced by the door's own error event, in Relay's words (after failover rules).
                raise error_from_object(data.get("error"))
        # message_start's output count is a placeholder: until message_delta reports the real one,
        # the stream's usage is unknown, so a stream the client abandons is billed like any other
        # (Relay's count of what was generated), not for one output token.
        usage = usage_from_anthropic(self._usage) if self._final else None
        return [NativeEvent(_frame(sse), usage, text, output)]

    def finish(self) -> list[NativeEvent]:
        if self._done:
            return []
        raise truncated_failure()

    def _merge(self, usage: Any) -> None:
        if isinstance(usage, Mapping):
            self._usage.update((k, v) for k, v in usage.items() if isinstance(v, int) and not isinstance(v, bool))


def _frame(sse: SSEEvent) -> bytes:
    """The event exactly as Anthropic writes it (``event:`` line, one ``data:`` line per data line)."""
    head = b"" if sse.event == "message" else b"event: " + sse.event.encode() + b"\n"
    data = b"".join(b"data: " + line.encode() + b"\n" for line in sse.data.split("\n"))
    return head + data + b"\n"
