"""The (Responses door × OpenAI API) pair: ``POST {base}/responses``, passed through natively.

The body is the door's native body (``call.native_body``: the client's request, unknown fields
kept, the conversation inlined, ``store: false``) with ``model`` set to the provider's name and
``stream`` as the call asks.  Answers come back as the provider sent them — events re-emitted
byte for byte, a JSON body untouched — with the usage the pipeline bills (``input_tokens``,
``output_tokens``, cached input) and the generated text (the fallback count) extracted on the
way; the door maps the ids (dialects/responses/native.py).  Errors are classified like every
OpenAI error; an ``error`` event or ``response.failed`` before anything was shown is a
provider failure, so the request can still fail over.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from relay_server.domain.provider import NativeEvent, NativeResponse, ProviderCall, Usage
from relay_server.errors import ErrorKind
from relay_server.providers.openai_compat import OpenAICompatTranslator
from relay_server.providers.sse import SSEEvent
from relay_server.providers.translator import (
    ProviderFailure,
    UpstreamRequest,
    base_url_for,
    malformed_failure,
    truncated_failure,
)

_TERMINAL = ("response.completed", "response.incomplete")


def responses_usage(usage: Any) -> Usage | None:
    if not isinstance(usage, Mapping):
        return None
    details = usage.get("input_tokens_details") or {}
    return Usage(
        prompt_tokens=int(usage.get("input_tokens") or 0),
        completion_tokens=int(usage.get("output_tokens") or 0),
        cache_read_tokens=int(details.get("cached_tokens") or 0),
    )


def _text_of(response: Mapping[str, Any]) -> str:
    texts: list[str] = []
    for item in response.get("output") or []:
        if not isinstance(item, Mapping):
            continue
        if item.get("type") == "message":
            texts.extend(str(p.get("text") or "") for p in item.get("content") or [] if isinstance(p, Mapping))
        elif item.get("type") == "function_call":
            texts.append(str(item.get("arguments") or ""))
    return "".join(texts)


class OpenAIResponsesTranslator(OpenAICompatTranslator):
    """Shares OpenAI's headers, error parsing and model listing; only the endpoint and shapes differ."""

    def request(self, call: ProviderCall, *, stream: bool) -> UpstreamRequest:
        body = dict(call.native_body or {})
        body["model"] = call.provider_model
        if stream:
            body["stream"] = True
        else:
            body.pop("stream", None)
        url = base_url_for(call, self.base_url) + "/responses"
        return UpstreamRequest("POST", url, self.headers(call.credential, stream=stream), body)

    def response(self, status: int, body: Any, call: ProviderCall) -> NativeResponse:  # type: ignore[override]
        if not isinstance(body, Mapping) or body.get("object") != "response":
            raise malformed_failure("the responses endpoint did not answer with a response object")
        return NativeResponse(orjson.dumps(body), responses_usage(body.get("usage")), _text_of(body))

    def stream_events(self, call: ProviderCall) -> ResponsesStream:  # type: ignore[override]
        return ResponsesStream()


class ResponsesStream:
    """SSE events of ``/responses`` → ``NativeEvent``s (bytes as received), usage merged."""

    __slots__ = ("_done", "_shown", "_usage")

    def __init__(self) -> None:
        self._done = False
        self._usage: Usage | None = None
        self._shown = False

    @property
    def done(self) -> bool:
        return self._done

    def feed(self, event: SSEEvent) -> list[NativeEvent]:
        if event.data == "[DONE]":
            self._done = True
            return []
        try:
            data = orjson.loads(event.data)
        except orjson.JSONDecodeError as exc:
            raise malformed_failure(f"stream event is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise malformed_failure("stream event is not a JSON object")
        kind = data.get("type") or event.event
        if kind in ("error", "response.failed") and not self._shown:
            error = data.get("error") or (data.get("response") or {}).get("error") or {}
            raise ProviderFailure(
                ErrorKind.PROVIDER_ERROR, "the upstream provider failed the response", retryable=True,
                upstream_message=str(error.get("message") or "")[:500],
            )  # fmt: skip
        self._shown = True
        text = ""
        if kind == "response.output_text.delta" or kind == "response.function_call_arguments.delta":
            text = str(data.get("delta") or "")
        if kind in (*_TERMINAL, "response.failed"):
            self._usage = responses_usage((data.get("response") or {}).get("usage")) or self._usage
            self._done = True
        name = event.event if event.event != "message" else kind
        raw = f"event: {name}\ndata: {event.data}\n\n".encode()
        return [NativeEvent(raw, usage=self._usage, text=text, output=bool(text))]

    def finish(self) -> list[NativeEvent]:
        if not self._done:
            raise truncated_failure()
        return []
