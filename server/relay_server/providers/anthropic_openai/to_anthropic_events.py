"""OpenAI chat chunks -> Anthropic Messages stream events (any non-Claude model behind the
Anthropic door).

The sequence is Anthropic's: ``message_start``; per content block ``content_block_start``,
its deltas, ``content_block_stop``; one ``ping`` after the first block opens (where Anthropic
sends it); then ``message_delta`` (stop reason and the usage) and ``message_stop``.

Blocks are opened in the order the chunks bring them and one block is open at a time:
``reasoning_content`` → a ``thinking`` block (``thinking_delta``), ``content`` → a ``text``
block (``text_delta``), each new OpenAI tool call index → its own ``tool_use`` block whose
argument fragments are ``input_json_delta``s in arrival order.  A switch closes the open
block first, so text after thinking opens a new block and is never dropped, and several tool
calls stay several blocks.  Input usage is only known at the end (the usage chunk): the
``message_start`` carries Relay's estimate and ``message_delta`` the provider's counts, which
SDKs take over (message_delta counts are cumulative).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from relay_server.domain.provider import Usage
from relay_server.providers.anthropic_openai.tables import anthropic_usage, stop_reason


def event(name: str, data: Mapping[str, Any]) -> bytes:
    """One SSE frame as Anthropic writes it: ``event:`` line, ``data:`` line, blank line."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class AnthropicEvents:
    """Per-stream state: feed OpenAI chunk dicts, get Anthropic event frames."""

    __slots__ = (
        "_estimated_input",
        "_finish",
        "_id",
        "_model",
        "_next",
        "_open",
        "_pinged",
        "_started",
        "_tools",
        "_usage",
    )

    def __init__(self, message_id: str, model: str, estimated_input: int = 0) -> None:
        self._id = message_id
        self._model = model
        self._estimated_input = estimated_input
        self._started = False
        self._pinged = False
        self._open: tuple[str, int] | None = None
        """(block kind, Anthropic index) of the open block; a tool's kind is ``tool:<openai index>``."""
        self._next = 0
        self._tools: dict[int, int] = {}
        """OpenAI tool_calls[].index → Anthropic content block index."""
        self._finish: str | None = None
        self._usage: Usage | None = None

    def chunk(self, chunk: Mapping[str, Any]) -> list[bytes]:
        out: list[bytes] = []
        if not self._started:
            self._started = True
            self._model = str(chunk.get("model") or self._model)
            out.append(self._message_start())
        raw_usage = chunk.get("usage")
        if isinstance(raw_usage, Mapping):
            self._usage = Usage.from_openai(raw_usage)
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, Mapping) or choice.get("index", 0) != 0:
                continue  # the Anthropic door asks for one choice
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if isinstance(reasoning, str) and reasoning:
                out.extend(self._delta("thinking", {"type": "thinking", "thinking": "", "signature": ""},
                                       {"type": "thinking_delta", "thinking": reasoning}))
            text = delta.get("content") or delta.get("refusal")  # a refusal is the answer's text
            if isinstance(text, str) and text:
                out.extend(self._delta("text", {"type": "text", "text": ""}, {"type": "text_delta", "text": text}))
            for call in delta.get("tool_calls") or ():
                out.extend(self._tool_call(call))
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
        return out

    def end(self) -> list[bytes]:
        out = [] if self._started else [self._message_start()]
        out.extend(self._close())
        usage = anthropic_usage(self._usage, estimated_input=self._estimated_input)
        out.append(event("message_delta", {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason(self._finish), "stop_sequence": None},
            "usage": usage,
        }))
        out.append(event("message_stop", {"type": "message_stop"}))
        return out

    # -- internals --------------------------------------------------------------------------

    def _message_start(self) -> bytes:
        message: dict[str, Any] = {
            "id": self._id, "type": "message", "role": "assistant", "model": self._model, "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": self._estimated_input, "output_tokens": 0,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
        }
        return event("message_start", {"type": "message_start", "message": message})

    def _delta(self, kind: str, block: Mapping[str, Any], delta: Mapping[str, Any]) -> list[bytes]:
        out = [] if self._open is not None and self._open[0] == kind else self._start(kind, block)
        assert self._open is not None
        out.append(event("content_block_delta", {"type": "content_block_delta", "index": self._open[1], "delta": delta}))
        return out

    def _tool_call(self, call: Any) -> list[bytes]:
        if not isinstance(call, Mapping):
            return []
        slot = call.get("index", 0)
        function = call.get("function") or {}
        out: list[bytes] = []
        if slot not in self._tools:
            block: dict[str, Any] = {"type": "tool_use", "id": call.get("id") or f"toolu_{self._id}_{slot}",
                     "name": function.get("name") or "", "input": {}}
            out.extend(self._start(f"tool:{slot}", block))
            self._tools[slot] = self._next - 1
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            # Fragments of a tool whose block was closed (a provider interleaving calls) still
            # carry their own block index, which is how SDKs assemble them.
            delta = {"type": "input_json_delta", "partial_json": arguments}
            out.append(event("content_block_delta", {"type": "content_block_delta", "index": self._tools[slot], "delta": delta}))
        return out

    def _start(self, kind: str, block: Mapping[str, Any]) -> list[bytes]:
        out = self._close()
        index = self._next
        self._next += 1
        self._open = (kind, index)
        out.append(event("content_block_start", {"type": "content_block_start", "index": index, "content_block": block}))
        if not self._pinged:
            self._pinged = True
            out.append(event("ping", {"type": "ping"}))
        return out

    def _close(self) -> list[bytes]:
        if self._open is None:
            return []
        index = self._open[1]
        self._open = None
        return [event("content_block_stop", {"type": "content_block_stop", "index": index})]
