"""Whole (non-streamed) answers, both directions: an Anthropic message as an OpenAI chat
completion (a Claude model behind an OpenAI-shaped door), and an OpenAI chat completion as an
Anthropic message (any other model behind the Anthropic door)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson

from relay_server.domain.provider import Usage
from relay_server.providers.anthropic_openai.tables import (
    anthropic_usage,
    finish_reason,
    openai_usage,
    stop_reason,
)


def openai_response(body: Mapping[str, Any], provider_model: str) -> dict[str, Any]:
    """Anthropic ``message`` → OpenAI ``chat.completion`` (thinking blocks become ``reasoning_content``)."""
    texts: list[str] = []
    thinking: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    for block in body.get("content") or []:
        if not isinstance(block, Mapping):
            continue
        kind = block.get("type")
        if kind == "text":
            texts.append(str(block.get("text") or ""))
        elif kind == "thinking":
            thinking.append(str(block.get("thinking") or ""))
        elif kind == "tool_use":
            tool_calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": orjson.dumps(block.get("input") or {}).decode()},
                }
            )
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None, "refusal": None}
    if thinking:
        message["reasoning_content"] = "".join(thinking)
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": body.get("id", ""),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model") or provider_model,
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason(body.get("stop_reason"))}
        ],
        "usage": openai_usage(body.get("usage") or {}),
    }


def anthropic_message(response: Mapping[str, Any], *, message_id: str, estimated_input: int = 0) -> dict[str, Any]:
    """OpenAI ``chat.completion`` → Anthropic ``message``: reasoning, then text, then one
    ``tool_use`` block per tool call (arguments parsed back into ``input``)."""
    choices = response.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], Mapping) else {}
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    text = message.get("content")
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal and not text:
        content.append({"type": "text", "text": refusal})
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        content.append(
            {"type": "tool_use", "id": call.get("id") or "", "name": function.get("name") or "",
             "input": tool_input(function.get("arguments"))}
        )
    raw_usage = response.get("usage")
    usage = Usage.from_openai(raw_usage) if isinstance(raw_usage, Mapping) else None
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": response.get("model") or "",
        "content": content,
        "stop_reason": stop_reason(choice.get("finish_reason")),
        "stop_sequence": None,
        "usage": anthropic_usage(usage, estimated_input=estimated_input),
    }


def tool_input(arguments: Any) -> dict[str, Any]:
    """OpenAI's argument string as Anthropic's ``input`` object (a model's broken JSON is kept
    whole under ``_raw`` rather than lost)."""
    if isinstance(arguments, Mapping):
        return dict(arguments)
    if not arguments:
        return {}
    try:
        parsed = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return {"_raw": str(arguments)}
    return parsed if isinstance(parsed, dict) else {"_raw": str(arguments)}


def message_id(request_id: str) -> str:
    """An Anthropic-looking message id for an answer that did not come from Anthropic."""
    return "msg_" + "".join(c for c in request_id if c.isalnum())[-32:]
