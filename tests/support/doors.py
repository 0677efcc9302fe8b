"""One client call per door, so the same limits/caps/revocation tests run against each public
dialect through its official SDK (``openai`` chat and responses, ``anthropic`` messages)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import anthropic
import openai

from tests.support.metering import MESSAGES

DOORS = ("openai", "responses", "anthropic")
"""The public dialects a client may call; limits, caps and the request log are the same through each."""


@dataclass
class DoorClient:
    door: str
    base_url: str
    """Relay's ``.../v1`` URL."""
    key: str
    max_retries: int = 0

    @property
    def status_error(self) -> type[Exception]:
        return anthropic.APIStatusError if self.door == "anthropic" else openai.APIStatusError

    @property
    def rate_limit_error(self) -> type[Exception]:
        return anthropic.RateLimitError if self.door == "anthropic" else openai.RateLimitError

    @property
    def authentication_error(self) -> type[Exception]:
        return anthropic.AuthenticationError if self.door == "anthropic" else openai.AuthenticationError

    def _openai(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url, api_key=self.key, timeout=30, max_retries=self.max_retries)

    def _anthropic(self) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=self.base_url.removesuffix("/v1"), api_key=self.key, timeout=30,
                                   max_retries=self.max_retries)

    def create(self, model: str = "gpt-4o-mini", max_tokens: int = 5) -> tuple[str, Any]:
        """(the answer's text, the raw response headers)."""
        if self.door == "openai":
            raw = self._openai().chat.completions.with_raw_response.create(model=model, messages=MESSAGES, max_tokens=max_tokens)
            return raw.parse().choices[0].message.content or "", raw.headers
        if self.door == "responses":
            raw = self._openai().responses.with_raw_response.create(model=model, input=MESSAGES, max_output_tokens=max_tokens)
            return raw.parse().output_text, raw.headers
        raw = self._anthropic().messages.with_raw_response.create(model=model, messages=_anthropic_messages(), max_tokens=max_tokens)
        return "".join(b.text for b in raw.parse().content if b.type == "text"), raw.headers

    @contextmanager
    def stream(self, model: str = "gpt-4o-mini", max_tokens: int = 5) -> Iterator[tuple[Any, list[str]]]:
        """(the stream's response headers, its lines)."""
        if self.door == "openai":
            with self._openai().chat.completions.with_streaming_response.create(
                model=model, messages=MESSAGES, stream=True, max_tokens=max_tokens
            ) as response:
                yield response.headers, list(response.iter_lines())
            return
        if self.door == "responses":
            with self._openai().responses.with_streaming_response.create(
                model=model, input=MESSAGES, stream=True, max_output_tokens=max_tokens
            ) as response:
                yield response.headers, list(response.iter_lines())
            return
        with self._anthropic().messages.with_streaming_response.create(
            model=model, messages=_anthropic_messages(), stream=True, max_tokens=max_tokens
        ) as response:
            yield response.headers, list(response.iter_lines())

    def error_code(self, body: Any) -> tuple[Any, str]:
        """(the error's code, its type) as this door's clients read them."""
        if self.door != "anthropic":
            return body["error"]["code"], body["error"]["type"]
        assert body["type"] == "error"
        return None, body["error"]["type"]


def _anthropic_messages() -> list[dict[str, Any]]:
    system = [m for m in MESSAGES if m["role"] == "system"]
    assert not system, "the shared MESSAGES are user turns only"
    return [dict(m) for m in MESSAGES]
