"""OpenAI wire format: the passthrough translator.

The client's JSON goes upstream untouched (unknown fields included: a gateway
must not lag behind new OpenAI parameters) except ``model``, which becomes the
catalog's provider name, and, for streams, ``stream_options.include_usage``,
always on so every stream can be billed from the provider's own count.

Mistral, Groq and generic self-hosted servers (vLLM, Ollama, llama.cpp) reuse
this class and override only what differs.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson

from relay_server.domain.provider import Credential, ProviderCall
from relay_server.errors import ErrorKind
from relay_server.providers.auth import credential_headers
from relay_server.providers.sse import SSEEvent
from relay_server.providers.translator import (
    ProviderFailure,
    UpstreamRequest,
    base_url_for,
    classify_http_error,
    malformed_failure,
    truncated_failure,
)

OPENAI_BASE_URL = "https://api.openai.com/v1"

_PATHS: dict[str, str] = {
    "chat": "/chat/completions",
    "completion": "/completions",
    "embedding": "/embeddings",
}


class OpenAICompatTranslator:
    # Strict servers end every stream with "data: [DONE]"; a connection that
    # closes before it was cut, and its usage chunk may be missing.
    require_done_marker: bool = True

    def __init__(self, name: str = "openai", base_url: str = OPENAI_BASE_URL) -> None:
        self.name = name
        self.base_url = base_url

    # -- requests ----------------------------------------------------------

    def request(self, call: ProviderCall, *, stream: bool) -> UpstreamRequest:
        body = self.prepare_body(call, stream=stream)
        url = base_url_for(call, self.base_url) + _PATHS[call.kind]
        return UpstreamRequest("POST", url, self.headers(call.credential, stream=stream), body)

    def prepare_body(self, call: ProviderCall, *, stream: bool) -> dict[str, Any]:
        # A shallow copy is enough: only top-level keys are replaced, nested
        # values are shared read-only with call.body.
        body = dict(call.body)
        body["model"] = call.provider_model
        if call.kind == "embedding":
            return body
        if stream:
            body["stream"] = True
            options = body.get("stream_options")
            body["stream_options"] = {**(options if isinstance(options, Mapping) else {}), "include_usage": True}
        else:
            body.pop("stream", None)
            body.pop("stream_options", None)  # rejected upstream unless stream is true
        return body

    def headers(self, credential: Credential | None, *, stream: bool) -> dict[str, str]:
        accept = "text/event-stream" if stream else "application/json"
        return {"Accept": accept, **credential_headers(credential, "bearer")}

    def models_request(self, credential: Credential | None) -> UpstreamRequest:
        base = ((credential.base_url if credential else "") or self.base_url).rstrip("/")
        return UpstreamRequest("GET", base + "/models", self.headers(credential, stream=False))

    # -- responses ---------------------------------------------------------

    def response(self, status: int, body: Any, call: ProviderCall) -> dict[str, Any]:
        return body

    def models_response(self, body: Any) -> dict[str, Any]:
        return body

    def stream_events(self, call: ProviderCall) -> OpenAIStreamTranslator:
        return OpenAIStreamTranslator(require_done_marker=self.require_done_marker)

    def error(self, status: int, body: bytes, headers: Mapping[str, str]) -> ProviderFailure:
        message, code, param = parse_error_body(body)
        return classify_http_error(status, message=message, code=code, param=param, headers=headers)


def parse_error_body(body: bytes) -> tuple[str, str | None, str | None]:
    """(message, code, param) from OpenAI-style bodies and the common variants
    (``{"message": ...}``, ``{"detail": ...}``, Mistral's structured messages)."""
    try:
        parsed = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return body[:500].decode("utf-8", errors="replace").strip(), None, None
    if not isinstance(parsed, dict):
        return "", None, None
    error = parsed.get("error")
    source = error if isinstance(error, dict) else parsed
    message: Any = source.get("message") or source.get("detail") or (error if isinstance(error, str) else "")
    if not isinstance(message, str):
        message = orjson.dumps(message).decode()
    code = source.get("code")
    param = source.get("param")
    return (
        message,
        str(code) if code is not None else None,
        param if isinstance(param, str) else None,
    )


class OpenAIStreamTranslator:
    """OpenAI chunks pass through; usage is normalised into a final chunk.

    Some servers put ``usage`` on the last content chunk (Mistral, vLLM) or
    elsewhere (Groq): it is moved into a separate ``{"choices": [], "usage"}``
    chunk emitted at the end, so the pipeline sees one shape for all of them.
    """

    __slots__ = ("_done", "_held_usage", "_meta", "_saw_finish", "_require_done")

    def __init__(self, *, require_done_marker: bool = True) -> None:
        self._done = False
        self._held_usage: dict[str, Any] | None = None
        self._meta: dict[str, Any] = {}
        self._saw_finish = False
        self._require_done = require_done_marker

    @property
    def done(self) -> bool:
        return self._done

    def feed(self, event: SSEEvent) -> list[dict[str, Any]]:
        data = event.data
        if data == "[DONE]":
            self._done = True
            return self._flush_usage()
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise malformed_failure(f"stream chunk is not JSON: {data[:200]!r}") from None
        if not isinstance(chunk, dict):
            raise malformed_failure("stream chunk is not a JSON object")
        if "error" in chunk and "choices" not in chunk:
            raise mid_stream_error(chunk["error"])
        self._meta = chunk
        choices = chunk.get("choices")
        if choices and not self._saw_finish:
            self._saw_finish = any(isinstance(c, dict) and c.get("finish_reason") for c in choices)
        usage = self.usage_of(chunk)
        if usage is None:
            return [chunk]
        if not choices:
            chunk["usage"] = usage
            self._held_usage = None
            return [chunk]
        chunk.pop("usage", None)
        self._held_usage = usage
        return [chunk]

    def usage_of(self, chunk: dict[str, Any]) -> dict[str, Any] | None:
        """The chunk's usage, if it reports one (``"usage": null`` does not)."""
        usage = chunk.get("usage")
        return usage if isinstance(usage, dict) else None

    def finish(self) -> list[dict[str, Any]]:
        if self._done:
            return []
        if not self._require_done and self._saw_finish:
            self._done = True
            return self._flush_usage()
        raise truncated_failure()

    def _flush_usage(self) -> list[dict[str, Any]]:
        if self._held_usage is None:
            return []
        usage, self._held_usage = self._held_usage, None
        meta = self._meta
        return [
            {
                "id": meta.get("id", ""),
                "object": meta.get("object", "chat.completion.chunk"),
                "created": meta.get("created", int(time.time())),
                "model": meta.get("model", ""),
                "choices": [],
                "usage": usage,
            }
        ]


def mid_stream_error(error: Any) -> ProviderFailure:
    """An error object sent inside an already-started stream."""
    message = error.get("message") if isinstance(error, dict) else str(error)
    return ProviderFailure(
        ErrorKind.PROVIDER_ERROR,
        "the upstream provider failed mid-stream",
        retryable=True,
        upstream_message=str(message or ""),
    )


class GenericOpenAICompatible(OpenAICompatTranslator):
    """Self-hosted OpenAI-compatible servers (vLLM, Ollama, llama.cpp server).

    The base URL comes from the credential.  Some of these servers close the
    stream after the last finish_reason without ``[DONE]``: accepted here, while
    a cut before any finish_reason is still an error.
    """

    require_done_marker = False

    def __init__(self, name: str = "openai_compatible", base_url: str = "") -> None:
        super().__init__(name, base_url)

    def request(self, call: ProviderCall, *, stream: bool) -> UpstreamRequest:
        if not base_url_for(call, self.base_url):
            raise ProviderFailure(
                ErrorKind.PROVIDER_ERROR,
                "the provider has no base URL configured",
                retryable=True,
            )
        return super().request(call, stream=stream)
