"""Message content as blocks, and the way between blocks and OpenAI chat messages.

Blocks (JSON objects with a ``type``):
  text         {"type": "text", "text": str}
  image        {"type": "image", "url": "https://…" | "data:image/…;base64,…", "detail"?: auto|low|high}
  tool_use     {"type": "tool_use", "id": str, "name": str, "input": object}
  tool_result  {"type": "tool_result", "tool_use_id": str, "content": str | [text blocks], "is_error"?: bool}

Clients send user messages (text, image) and tool messages (tool_result);
assistant messages (text, tool_use) come from the model.  A stored thread
becomes an OpenAI ``messages`` list for the next run: tool_use blocks become
``tool_calls``, each tool_result block a ``role: tool`` message.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from relay_server.errors import ErrorKind, RelayError

SENDABLE_ROLES = {"user": {"text", "image"}, "tool": {"tool_result"}}
TOOL_BLOCKS = frozenset({"tool_use", "tool_result"})
MAX_BLOCKS = 256
_DETAILS = {"auto", "low", "high"}


def _invalid(message: str, index: int | None = None) -> RelayError:
    param = "content" if index is None else f"content[{index}]"
    return RelayError(ErrorKind.INVALID_REQUEST, message, param=param)


def _text(value: Any, what: str, index: int) -> str:
    if not isinstance(value, str) or not value:
        raise _invalid(f"{what} must be a non-empty string.", index)
    return value


def validate_blocks(role: str, blocks: Sequence[Any]) -> list[dict[str, Any]]:
    """The normalised blocks of a message a client sends; 422 for anything else."""
    allowed = SENDABLE_ROLES.get(role)
    if allowed is None:
        raise RelayError(ErrorKind.INVALID_REQUEST, "role must be 'user' or 'tool'.", param="role")
    if not blocks:
        raise _invalid("content must hold at least one block.")
    if len(blocks) > MAX_BLOCKS:
        raise _invalid(f"content may hold at most {MAX_BLOCKS} blocks.")
    out = []
    for index, block in enumerate(blocks):
        if not isinstance(block, Mapping):
            raise _invalid("each content block must be an object.", index)
        kind = block.get("type")
        if kind not in allowed:
            raise _invalid(f"a {role} message may hold blocks of type {', '.join(sorted(allowed))}; got {kind!r}.", index)
        out.append(_normalise(kind, block, index))
    return out


def _normalise(kind: str, block: Mapping[str, Any], index: int) -> dict[str, Any]:
    if kind == "text":
        return {"type": "text", "text": _text(block.get("text"), "text", index)}
    if kind == "image":
        url = _text(block.get("url"), "url", index)
        if not url.startswith(("https://", "http://", "data:image/")):
            raise _invalid("url must be an http(s) URL or a data:image/ URL.", index)
        detail = block.get("detail", "auto")
        if detail not in _DETAILS:
            raise _invalid("detail must be auto, low or high.", index)
        return {"type": "image", "url": url, "detail": detail}
    # tool_result
    content = block.get("content", "")
    if isinstance(content, list):
        if not all(isinstance(p, Mapping) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content):
            raise _invalid("tool_result content must be a string or a list of text blocks.", index)
        content = [{"type": "text", "text": p["text"]} for p in content]
    elif not isinstance(content, str):
        raise _invalid("tool_result content must be a string or a list of text blocks.", index)
    is_error = block.get("is_error", False)
    if not isinstance(is_error, bool):
        raise _invalid("is_error must be a boolean.", index)
    return {"type": "tool_result", "tool_use_id": _text(block.get("tool_use_id"), "tool_use_id", index),
            "content": content, "is_error": is_error}


def visible(blocks: Sequence[Mapping[str, Any]], include_tools: bool) -> list[dict[str, Any]]:
    return [dict(b) for b in blocks if include_tools or b.get("type") not in TOOL_BLOCKS]


def text_of(blocks: Sequence[Mapping[str, Any]]) -> str:
    return "\n".join(b["text"] for b in blocks if b.get("type") == "text" and isinstance(b.get("text"), str))


# --- blocks → OpenAI messages ---------------------------------------------------


def _result_text(content: Any) -> str:
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if isinstance(p, Mapping))
    return str(content)


def to_openai_messages(role: str, blocks: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One stored message → the OpenAI chat message(s) that stand for it."""
    if role == "tool":
        return [{"role": "tool", "tool_call_id": b["tool_use_id"], "content": _result_text(b.get("content"))}
                for b in blocks if b.get("type") == "tool_result"]
    if role == "assistant":
        message: dict[str, Any] = {"role": "assistant", "content": text_of(blocks) or None}
        calls = [{"id": b["id"], "type": "function",
                  "function": {"name": b["name"], "arguments": json.dumps(b.get("input") or {}, ensure_ascii=False)}}
                 for b in blocks if b.get("type") == "tool_use"]
        if calls:
            message["tool_calls"] = calls
        return [message] if calls or message["content"] else []
    parts: list[dict[str, Any]] = []
    for b in blocks:
        if b.get("type") == "text":
            parts.append({"type": "text", "text": b["text"]})
        elif b.get("type") == "image":
            parts.append({"type": "image_url", "image_url": {"url": b["url"], "detail": b.get("detail", "auto")}})
    if not parts:
        return []
    if all(p["type"] == "text" for p in parts):
        return [{"role": role, "content": "\n".join(p["text"] for p in parts)}]
    return [{"role": role, "content": parts}]


def prompt_messages(history: Sequence[tuple[str, Sequence[Mapping[str, Any]]]]) -> list[dict[str, Any]]:
    """A thread's history (oldest first) → OpenAI messages.

    A history window may start in the middle of a tool exchange: tool results
    whose call fell outside the window are dropped (a provider refuses them).
    """
    out: list[dict[str, Any]] = []
    offered: set[str] = set()
    for role, blocks in history:
        for message in to_openai_messages(role, blocks):
            if message["role"] == "tool" and message["tool_call_id"] not in offered:
                continue
            offered.update(c["id"] for c in message.get("tool_calls") or ())
            out.append(message)
    return out


# --- assistant reply → blocks ----------------------------------------------------


def reply_blocks(text: str, tool_calls: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The blocks of an assistant reply: its text, then one tool_use per tool call."""
    blocks: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    for call in tool_calls:
        function = call.get("function") or {}
        raw = function.get("arguments") or ""
        try:
            arguments = json.loads(raw) if raw else {}
        except ValueError:
            arguments = {"_raw": raw}  # a truncated call: keep what the model produced
        if not isinstance(arguments, dict):
            arguments = {"_value": arguments}
        blocks.append({"type": "tool_use", "id": call.get("id") or "", "name": function.get("name") or "",
                       "input": arguments})
    return blocks
