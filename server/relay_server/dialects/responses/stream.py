"""Chat completion chunks → the Responses semantic events.

The sequence the SDKs parse (each event numbered by ``sequence_number`` from 0)::

    response.created → response.in_progress
    per text:      output_item.added (message) → content_part.added → output_text.delta…
                   → output_text.done → content_part.done → output_item.done
    per tool call: output_item.added (function_call) → function_call_arguments.delta…
                   → function_call_arguments.done → output_item.done
    response.completed (or .incomplete) with usage   |   response.failed after an error

An item is closed before the next one opens, as OpenAI does; ``output_index`` is the item's
position in ``response.output``.  The state (``output``, ``usage``, the final ``response``) is
what the door stores once the stream ends.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from relay_server.dialects.responses.output import (
    INCOMPLETE,
    function_call_item,
    message_item,
    response_object,
    usage_object,
)
from relay_server.dialects.responses.request import Turn
from relay_server.ids import new_id

Event = dict[str, Any]


class ChatToEvents:
    """One streamed response's state: feed chat chunks, get Responses events."""

    def __init__(self, turn: Turn, response_id: str, *, created_at: float, model: str) -> None:
        self.turn = turn
        self.response_id = response_id
        self.created_at = created_at
        self.model = model
        self.sequence = 0
        self.output: list[dict[str, Any]] = []
        self.usage: dict[str, Any] | None = None
        self.final: dict[str, Any] | None = None
        """The terminal ``response`` object (completed, incomplete or failed), once known."""
        self._started = False
        self._open: int | None = None  # output_index of the item receiving deltas
        self._calls: dict[int, int] = {}  # chat tool_call index → output_index
        self._finish: str | None = None

    # -- events -----------------------------------------------------------------------------

    def _event(self, kind: str, **fields: Any) -> Event:
        event = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return event

    def snapshot(self, status: str, **extra: Any) -> dict[str, Any]:
        return response_object(
            self.turn, self.response_id, created_at=self.created_at, model=self.model, status=status,
            output=self.output if status != "in_progress" else [], usage=self.usage, **extra,
        )  # fmt: skip

    def start(self) -> list[Event]:
        if self._started:
            return []
        self._started = True
        return [
            self._event("response.created", response=self.snapshot("in_progress")),
            self._event("response.in_progress", response=self.snapshot("in_progress")),
        ]

    def chunk(self, chunk: Mapping[str, Any]) -> list[Event]:
        events = self.start()
        if chunk.get("usage"):
            self.usage = usage_object(chunk["usage"])
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if content:
                events.extend(self._text(content))
            for call in delta.get("tool_calls") or []:
                events.extend(self._tool_call(call))
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
        return events

    def _text(self, delta: str) -> list[Event]:
        events: list[Event] = []
        index = self._open
        if index is None or self.output[index]["type"] != "message":
            events.extend(self._close())
            index = len(self.output)
            item = message_item(new_id("msg"), "", status="in_progress")
            part = item["content"][0]
            item["content"] = []
            self.output.append(item)
            self._open = index
            events.append(self._event("response.output_item.added", output_index=index, item=_copy(item)))
            item["content"].append(part)
            events.append(self._event("response.content_part.added", item_id=item["id"], output_index=index,
                                      content_index=0, part=dict(part)))  # fmt: skip
        item = self.output[index]
        item["content"][0]["text"] += delta
        events.append(self._event("response.output_text.delta", item_id=item["id"], output_index=index,
                                  content_index=0, delta=delta, logprobs=[]))  # fmt: skip
        return events

    def _tool_call(self, call: Mapping[str, Any]) -> list[Event]:
        events: list[Event] = []
        function = call.get("function") or {}
        position = int(call.get("index") or 0)
        index = self._calls.get(position)
        if index is None:
            events.extend(self._close())
            index = len(self.output)
            item = function_call_item(new_id("fc"), call.get("id") or new_id("call"), function.get("name") or "", "", "in_progress")
            self.output.append(item)
            self._calls[position] = index
            self._open = index
            events.append(self._event("response.output_item.added", output_index=index, item=dict(item)))
        item = self.output[index]
        if function.get("name") and not item["name"]:
            item["name"] = function["name"]
        if function.get("arguments"):
            item["arguments"] += function["arguments"]
            events.append(self._event("response.function_call_arguments.delta", item_id=item["id"],
                                      output_index=index, delta=function["arguments"]))  # fmt: skip
        return events

    def _close(self) -> list[Event]:
        index = self._open
        if index is None:
            return []
        self._open = None
        item = self.output[index]
        item["status"] = "completed"
        events: list[Event] = []
        if item["type"] == "message":
            part = item["content"][0]
            events.append(self._event("response.output_text.done", item_id=item["id"], output_index=index,
                                      content_index=0, text=part["text"], logprobs=[]))  # fmt: skip
            events.append(self._event("response.content_part.done", item_id=item["id"], output_index=index,
                                      content_index=0, part=dict(part)))  # fmt: skip
        else:
            events.append(self._event("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                                      name=item["name"], arguments=item["arguments"]))  # fmt: skip
        events.append(self._event("response.output_item.done", output_index=index, item=_copy(item)))
        return events

    def end(self) -> list[Event]:
        """The provider finished: close the open item, then ``response.completed`` (or incomplete)."""
        events = self.start()
        events.extend(self._close())
        reason = INCOMPLETE.get(self._finish or "")
        self.final = self.snapshot("incomplete" if reason else "completed", incomplete_reason=reason)
        events.append(self._event("response.incomplete" if reason else "response.completed", response=self.final))
        return events

    def fail(self, code: str, message: str) -> list[Event]:
        """A failure after the first event: ``response.failed`` with what was produced so far."""
        events = self.start()
        for item in self.output:
            if item["status"] == "in_progress":
                item["status"] = "incomplete"
        self.final = self.snapshot("failed", error={"code": code, "message": message})
        events.append(self._event("response.failed", response=self.final))
        return events


def _copy(item: Mapping[str, Any]) -> dict[str, Any]:
    copied = dict(item)
    if "content" in copied:
        copied["content"] = [dict(p) for p in copied["content"]]
    return copied
