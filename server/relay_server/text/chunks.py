"""The two shapes of one completion: a response body and its stream of chunks.

``ChunkAssembler`` folds OpenAI stream chunks (chat or legacy completion) into
the body the same request would have got without ``stream`` — what the
response cache stores after a streamed miss, and what a thread persists as the
assistant's reply.  ``replay_chunks`` goes the other way: a stored body becomes
a proper stream again (role chunk, content deltas, finish chunk, usage chunk
last, as every provider stream ends here), so a cache hit streams exactly like
a provider would.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from relay_server.domain.provider import RequestKind

# Replayed content is cut into deltas of this many characters: a client that
# renders as it reads sees a stream, and no single frame is huge.
REPLAY_DELTA_CHARS = 64

_HEAD_FIELDS = ("id", "created", "model", "system_fingerprint", "service_tier")


@dataclass(slots=True)
class _ToolCall:
    id: str | None = None
    type: str = "function"
    name: str = ""
    arguments: list[str] = field(default_factory=list)

    def as_openai(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "function": {"name": self.name, "arguments": "".join(self.arguments)}}


@dataclass(slots=True)
class _Choice:
    index: int
    text: list[str] = field(default_factory=list)
    refusal: list[str] = field(default_factory=list)
    tool_calls: dict[int, _ToolCall] = field(default_factory=dict)
    finish_reason: str | None = None
    saw_content: bool = False


class ChunkAssembler:
    """Accumulates chunks; ``response()`` is the equivalent non-streaming body."""

    def __init__(self, kind: RequestKind) -> None:
        if kind not in ("chat", "completion"):
            raise ValueError(f"cannot assemble a {kind!r} stream")
        self.kind = kind
        self._head: dict[str, Any] = {}
        self._choices: dict[int, _Choice] = {}
        self.usage: dict[str, Any] | None = None

    def add(self, chunk: Mapping[str, Any]) -> None:
        for name in _HEAD_FIELDS:
            if name not in self._head and chunk.get(name) is not None:
                self._head[name] = chunk[name]
        if isinstance(chunk.get("usage"), Mapping):
            self.usage = dict(chunk["usage"])
        for raw in chunk.get("choices") or ():
            if isinstance(raw, Mapping):
                self._add_choice(raw)

    def _add_choice(self, raw: Mapping[str, Any]) -> None:
        index = int(raw.get("index") or 0)
        choice = self._choices.setdefault(index, _Choice(index))
        if raw.get("finish_reason"):
            choice.finish_reason = str(raw["finish_reason"])
        if self.kind == "completion":
            if isinstance(raw.get("text"), str):
                choice.text.append(raw["text"])
            return
        delta = raw.get("delta")
        if not isinstance(delta, Mapping):
            return
        if isinstance(delta.get("content"), str):
            choice.text.append(delta["content"])
            choice.saw_content = True
        if isinstance(delta.get("refusal"), str):
            choice.refusal.append(delta["refusal"])
        for position, call in enumerate(delta.get("tool_calls") or ()):
            if not isinstance(call, Mapping):
                continue
            slot = choice.tool_calls.setdefault(int(call.get("index", position)), _ToolCall())
            if call.get("id"):
                slot.id = str(call["id"])
            if call.get("type"):
                slot.type = str(call["type"])
            function = call.get("function")
            if isinstance(function, Mapping):
                if function.get("name"):
                    slot.name = str(function["name"])
                if isinstance(function.get("arguments"), str):
                    slot.arguments.append(function["arguments"])

    @property
    def finished(self) -> bool:
        """True when every choice seen has a finish reason (the stream ran to its end)."""
        return bool(self._choices) and all(c.finish_reason for c in self._choices.values())

    def text(self, index: int = 0) -> str:
        choice = self._choices.get(index)
        return "".join(choice.text) if choice else ""

    def tool_calls(self, index: int = 0) -> list[dict[str, Any]]:
        choice = self._choices.get(index)
        return [choice.tool_calls[k].as_openai() for k in sorted(choice.tool_calls)] if choice else []

    def response(self) -> dict[str, Any]:
        head = {k: v for k, v in self._head.items() if k in ("id", "created", "model")}
        choices = [self._choice_body(self._choices[i]) for i in sorted(self._choices)]
        body: dict[str, Any] = {
            **head,
            "object": "chat.completion" if self.kind == "chat" else "text_completion",
            "choices": choices,
        }
        for extra in ("service_tier", "system_fingerprint"):
            if extra in self._head:
                body[extra] = self._head[extra]
        if self.usage is not None:
            body["usage"] = self.usage
        return body

    def _choice_body(self, choice: _Choice) -> dict[str, Any]:
        if self.kind == "completion":
            return {"text": "".join(choice.text), "index": choice.index, "logprobs": None,
                    "finish_reason": choice.finish_reason}
        message: dict[str, Any] = {
            "role": "assistant",
            "content": "".join(choice.text) if choice.text or not choice.tool_calls else None,
            "refusal": "".join(choice.refusal) if choice.refusal else None,
        }
        if choice.tool_calls:
            message["tool_calls"] = [choice.tool_calls[k].as_openai() for k in sorted(choice.tool_calls)]
        return {"index": choice.index, "message": message, "logprobs": None, "finish_reason": choice.finish_reason}


def _pieces(text: str) -> list[str]:
    return [text[i : i + REPLAY_DELTA_CHARS] for i in range(0, len(text), REPLAY_DELTA_CHARS)]


def replay_chunks(kind: RequestKind, response: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The stream a provider would have sent for ``response``, usage chunk last."""
    head: dict[str, Any] = {k: response[k] for k in ("id", "created", "model") if k in response}
    head["object"] = "chat.completion.chunk" if kind == "chat" else "text_completion"
    for extra in ("service_tier", "system_fingerprint"):
        if extra in response:
            head[extra] = response[extra]
    out: list[dict[str, Any]] = []
    for choice in response.get("choices") or ():
        out.extend(_chat_choice_chunks(head, choice) if kind == "chat" else _completion_choice_chunks(head, choice))
    usage = response.get("usage")
    out.append({**head, "choices": [], "usage": dict(usage) if isinstance(usage, Mapping) else None})
    return out


def _chat_choice_chunks(head: dict[str, Any], choice: Mapping[str, Any]) -> list[dict[str, Any]]:
    index = choice.get("index", 0)
    message = choice.get("message") or {}
    content = message.get("content")
    tool_calls = message.get("tool_calls") or []

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**head, "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    out = [chunk({"role": "assistant", "content": None if tool_calls else "", "refusal": None})]
    for k, call in enumerate(tool_calls):
        function = call.get("function") or {}
        opening = {"index": k, "id": call.get("id"), "type": call.get("type", "function"),
                   "function": {"name": function.get("name", ""), "arguments": ""}}
        out.append(chunk({"tool_calls": [opening]}))
        out.extend(chunk({"tool_calls": [{"index": k, "function": {"arguments": p}}]})
                   for p in _pieces(function.get("arguments") or ""))
    if isinstance(content, str):
        out.extend(chunk({"content": p}) for p in _pieces(content))
    if isinstance(message.get("refusal"), str):
        out.append(chunk({"refusal": message["refusal"]}))
    out.append(chunk({}, choice.get("finish_reason") or "stop"))
    return out


def _completion_choice_chunks(head: dict[str, Any], choice: Mapping[str, Any]) -> list[dict[str, Any]]:
    index = choice.get("index", 0)

    def chunk(text: str, finish: str | None = None) -> dict[str, Any]:
        return {**head, "choices": [{"text": text, "index": index, "logprobs": None, "finish_reason": finish}]}

    out = [chunk(p) for p in _pieces(choice.get("text") or "")]
    out.append(chunk("", choice.get("finish_reason") or "stop"))
    return out
