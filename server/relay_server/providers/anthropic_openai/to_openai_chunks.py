"""Anthropic Messages stream -> OpenAI chat chunks (a Claude model behind an OpenAI-shaped door).

Event order from Anthropic: ``message_start`` (id, model, input usage), then per
content block ``content_block_start`` / ``content_block_delta``* /
``content_block_stop``, then ``message_delta`` (stop reason, output usage) and
``message_stop``; ``ping`` may appear anywhere, ``error`` replaces the rest.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson

from relay_server.providers.anthropic_openai.tables import (
    error_from_object,
    finish_reason,
    openai_usage,
)
from relay_server.providers.sse import SSEEvent
from relay_server.providers.translator import malformed_failure, truncated_failure


class AnthropicStreamTranslator:
    __slots__ = ("_created", "_done", "_finish", "_id", "_model", "_tool_slots", "_usage")

    def __init__(self, model: str) -> None:
        self._done = False
        self._id = ""
        self._model = model
        self._created = int(time.time())
        self._usage: dict[str, Any] = {}
        self._finish: str | None = None
        self._tool_slots: dict[int, int] = {}
        """Anthropic content-block index -> OpenAI tool_calls[].index."""

    @property
    def done(self) -> bool:
        return self._done

    def feed(self, event: SSEEvent) -> list[dict[str, Any]]:
        try:
            data = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            raise malformed_failure(f"stream event is not JSON: {event.data[:200]!r}") from None
        if not isinstance(data, dict):
            raise malformed_failure("stream event is not a JSON object")
        match data.get("type") or event.event:
            case "message_start":
                return self._message_start(data.get("message") or {})
            case "content_block_start":
                return self._block_start(data.get("index"), data.get("content_block") or {})
            case "content_block_delta":
                return self._block_delta(data.get("index"), data.get("delta") or {})
            case "message_delta":
                delta = data.get("delta") or {}
                self._finish = finish_reason(delta.get("stop_reason"))
                self._merge_usage(data.get("usage"))
                return []
            case "message_stop":
                self._done = True
                return [
                    self._chunk({}, self._finish or "stop"),
                    {**self._envelope(), "choices": [], "usage": openai_usage(self._usage)},
                ]
            case "error":
                raise error_from_object(data.get("error"))
            case _:
                return []  # ping, content_block_stop, and events added after this was written

    def finish(self) -> list[dict[str, Any]]:
        if self._done:
            return []
        raise truncated_failure()

    def _message_start(self, message: Mapping[str, Any]) -> list[dict[str, Any]]:
        self._id = str(message.get("id") or "")
        self._model = str(message.get("model") or self._model)
        self._merge_usage(message.get("usage"))
        return [self._chunk({"role": "assistant", "content": ""})]

    def _block_start(self, index: Any, block: Mapping[str, Any]) -> list[dict[str, Any]]:
        kind = block.get("type")
        if kind == "tool_use":
            slot = len(self._tool_slots)
            self._tool_slots[index] = slot
            call = {
                "index": slot,
                "id": block.get("id"),
                "type": "function",
                "function": {"name": block.get("name"), "arguments": ""},
            }
            return [self._chunk({"tool_calls": [call]})]
        if kind == "text" and block.get("text"):
            return [self._chunk({"content": block["text"]})]
        return []  # thinking arrives in its deltas; other blocks are not part of the OpenAI message

    def _block_delta(self, index: Any, delta: Mapping[str, Any]) -> list[dict[str, Any]]:
        kind = delta.get("type")
        if kind == "text_delta":
            return [self._chunk({"content": delta.get("text", "")})]
        if kind == "input_json_delta":
            slot = self._tool_slots.get(index)
            if slot is None:
                raise malformed_failure(f"input_json_delta for block {index!r} that is not a tool_use")
            piece = {"index": slot, "function": {"arguments": delta.get("partial_json", "")}}
            return [self._chunk({"tool_calls": [piece]})]
        if kind == "thinking_delta":
            # OpenAI-compatible servers stream reasoning as ``reasoning_content``.
            return [self._chunk({"reasoning_content": delta.get("thinking", "")})]
        return []  # signature_delta, citations_delta

    def _merge_usage(self, usage: Any) -> None:
        # message_delta's counts are cumulative: later values replace earlier ones.
        if isinstance(usage, Mapping):
            self._usage.update((k, v) for k, v in usage.items() if v is not None)

    def _envelope(self) -> dict[str, Any]:
        return {"id": self._id, "object": "chat.completion.chunk", "created": self._created, "model": self._model}

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            **self._envelope(),
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
