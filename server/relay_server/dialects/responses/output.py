"""Chat completions → Responses: output items, usage and the ``response`` object.

The ``response`` object echoes the request's parameters (as OpenAI's does) around the parts
that change while it runs: ``status``, ``output``, ``usage``, ``error``, ``incomplete_details``.
Ids are Relay's: ``resp_…`` for the response, ``msg_…`` / ``fc_…`` for its output items.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from relay_server.dialects.responses.request import Turn
from relay_server.ids import new_id

# chat finish_reason → the Responses reason a response is incomplete.
INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    return {
        "id": item_id, "type": "message", "role": "assistant", "status": status,
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    }  # fmt: skip


def function_call_item(item_id: str, call_id: str, name: str, arguments: str, status: str = "completed") -> dict[str, Any]:
    return {"id": item_id, "type": "function_call", "call_id": call_id, "name": name, "arguments": arguments, "status": status}


def usage_object(usage: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """OpenAI chat usage → Responses usage."""
    if not usage:
        return None
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
    reasoning = int((usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0)
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": int(usage.get("cache_creation_input_tokens") or 0)},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": prompt + completion,
    }


def response_object(
    turn: Turn,
    response_id: str,
    *,
    created_at: float,
    model: str,
    status: str,
    output: Sequence[Mapping[str, Any]] = (),
    usage: Mapping[str, Any] | None = None,
    error: Mapping[str, Any] | None = None,
    incomplete_reason: str | None = None,
) -> dict[str, Any]:
    body = turn.body
    text = body.get("text") if isinstance(body.get("text"), Mapping) else {"format": {"type": "text"}}
    reasoning = body.get("reasoning") if isinstance(body.get("reasoning"), Mapping) else {"effort": None, "summary": None}
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(created_at),
        "status": status,
        "background": turn.background,
        "error": dict(error) if error else None,
        "incomplete_details": {"reason": incomplete_reason} if incomplete_reason else None,
        "instructions": turn.instructions,
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": body.get("max_tool_calls"),
        "model": model,
        "output": [dict(item) for item in output],
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": turn.previous_response_id,
        "reasoning": reasoning,
        "service_tier": "default",
        "store": turn.store,
        "temperature": body.get("temperature", 1.0),
        "text": text,
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": turn.tools,
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation", "disabled"),
        "usage": dict(usage) if usage else None,
        "user": body.get("user"),
        "metadata": turn.metadata or {},
        "completed_at": int(time.time()) if status == "completed" else None,
    }


def output_items(completion: Mapping[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
    """A chat completion's first choice → (output items, the chat finish_reason)."""
    choices = completion.get("choices") or []
    choice = choices[0] if choices else {}
    message = choice.get("message") or {}
    items: list[dict[str, Any]] = []
    content = message.get("content")
    if isinstance(content, list):  # some providers answer in parts
        content = "".join(str(p.get("text") or "") for p in content if isinstance(p, Mapping))
    if content:
        items.append(message_item(new_id("msg"), content))
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        items.append(
            function_call_item(new_id("fc"), call.get("id") or new_id("call"), function.get("name", ""), function.get("arguments") or "")
        )
    return items, choice.get("finish_reason")


def from_chat(turn: Turn, response_id: str, completion: Mapping[str, Any], *, created_at: float, model: str) -> dict[str, Any]:
    """A non-streamed chat completion → the Responses ``response`` object."""
    items, finish = output_items(completion)
    reason = INCOMPLETE.get(finish or "")
    return response_object(
        turn, response_id, created_at=created_at, model=model, status="incomplete" if reason else "completed",
        output=items, usage=usage_object(completion.get("usage")), incomplete_reason=reason,
    )  # fmt: skip


def output_text(output: Sequence[Mapping[str, Any]]) -> str:
    """The generated text of output items (for counting and for the ``output_text`` helper)."""
    texts: list[str] = []
    for item in output:
        if item.get("type") == "message":
            texts.extend(str(p.get("text") or "") for p in item.get("content") or [] if p.get("type") == "output_text")
        elif item.get("type") == "function_call":
            texts.append(str(item.get("arguments") or ""))
    return "".join(texts)
