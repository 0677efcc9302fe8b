"""The contract between the pipeline and every provider backend.

The pipeline speaks OpenAI's wire shapes internally: a request is the client's
OpenAI JSON (unknown fields kept), a response is an OpenAI response body, and a
stream is a sequence of OpenAI ``chat.completion.chunk`` / ``text_completion``
chunk dicts.  Every backend (the in-process test-mode mock, the OpenAI-compatible
passthrough, the Anthropic translator) turns its own wire format into these
shapes, so the pipeline never branches on which provider it talks to.

Streams are always produced in the ``stream_options.include_usage`` shape: the
last chunk carries ``usage`` and an empty ``choices`` list.  The stream step of
the pipeline decides whether the client sees that chunk.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

RequestKind = Literal["chat", "completion", "embedding"]

Door = str
"""The public API dialect a request arrived in: ``openai`` (chat, completions, embeddings and the typed
gRPC service, which speaks the same shapes), ``anthropic`` (Messages), ``responses`` (OpenAI Responses)."""


@dataclass(frozen=True, slots=True)
class Credential:
    """A decrypted provider credential, alive only for the duration of a call."""

    id: str
    api_key: str = field(repr=False)
    base_url: str = ""
    byok: bool = False
    """A tenant's own key: its ``base_url`` was chosen by the tenant, so connections to it are guarded."""


@dataclass(frozen=True, slots=True)
class ProviderCall:
    """One attempt at one provider.  Never mutated: retries and fallbacks reuse it."""

    kind: RequestKind
    body: Mapping[str, Any]
    """The client's request JSON as received (unknown fields included)."""
    provider_model: str
    """The model name the provider accepts (the catalog's ``provider_name``)."""
    request_id: str
    credential: Credential | None = None
    timeout_s: float = 600.0
    door: Door = "openai"
    """The dialect the client spoke; a provider whose API is that dialect may pass it through natively."""
    native_body: Mapping[str, Any] | None = None
    """The client's body in its own dialect (``body`` is always its OpenAI-chat form); None for ``openai``."""
    native_headers: Mapping[str, str] | None = field(default=None, repr=False)
    """The client's headers of that dialect (``anthropic-version``, ``anthropic-beta``), for a native pair."""

    def with_credential(self, credential: Credential) -> ProviderCall:
        """This call with ``credential`` (every attempt: ``dataclasses.replace`` costs 3× more)."""
        return ProviderCall(
            self.kind, self.body, self.provider_model, self.request_id, credential, self.timeout_s, self.door,
            self.native_body, self.native_headers,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class NativeEvent:
    """One stream event passed through in the client's own dialect, bytes untouched.

    Yielded instead of an OpenAI chunk dict when the provider speaks the door's dialect
    (e.g. a Claude model behind the Anthropic door).  The translator that produced it
    extracts what the pipeline needs: ``usage`` (merged: ``None`` fields unknown), the
    generated ``text`` (the fallback token count), and whether it is the first visible output.
    """

    data: bytes
    usage: Usage | None = None
    """The stream's usage so far, merged by the translator (input tokens may arrive first, output last)."""
    text: str = ""
    output: bool = False
    """True when the event carries generated output (time to first token is taken on the first)."""


@dataclass(frozen=True, slots=True)
class NativeResponse:
    """A whole non-streamed answer in the client's own dialect (see ``NativeEvent``)."""

    data: bytes
    usage: Usage | None = None
    text: str = ""


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        """Two provider calls billed as one request (an output-validation retry)."""
        return Usage(self.prompt_tokens + other.prompt_tokens, self.completion_tokens + other.completion_tokens,
                     self.cache_read_tokens + other.cache_read_tokens, self.cache_write_tokens + other.cache_write_tokens)

    def as_openai(self) -> dict[str, Any]:
        usage: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }
        if self.cache_read_tokens:
            usage["prompt_tokens_details"] = {"cached_tokens": self.cache_read_tokens}
        return usage

    @classmethod
    def from_openai(cls, usage: Mapping[str, Any] | None) -> Usage | None:
        if not usage:
            return None
        details = usage.get("prompt_tokens_details") or {}
        return cls(
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            cache_read_tokens=int(details.get("cached_tokens") or 0),
            cache_write_tokens=int(usage.get("cache_creation_input_tokens") or 0),
        )


class Provider(Protocol):
    """An executable backend.  Errors are raised as ``relay_server.errors.RelayError``."""

    name: str

    async def complete(self, call: ProviderCall) -> dict[str, Any] | NativeResponse:
        """Non-streaming chat or legacy completion: the OpenAI response body (or, when the provider
        speaks the call's door dialect, the provider's own answer untouched)."""
        ...

    def stream(self, call: ProviderCall) -> AsyncIterator[dict[str, Any] | NativeEvent]:
        """Streaming chat or legacy completion: OpenAI chunk dicts, usage chunk last (or native
        events when the provider speaks the call's door dialect)."""
        ...

    async def embed(self, call: ProviderCall) -> dict[str, Any] | NativeResponse:
        """Embeddings: the OpenAI ``list`` body, honouring ``encoding_format`` (never native in practice;
        typed like ``complete`` because one HTTP exchange serves both)."""
        ...
