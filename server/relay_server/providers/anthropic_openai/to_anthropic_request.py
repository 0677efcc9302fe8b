"""OpenAI chat request -> Anthropic Messages request (pure functions).

Anthropic differs from OpenAI in ways that matter here: system prompts live
outside ``messages``; turns must alternate user/assistant (so consecutive
same-role turns are merged and ``tool`` results travel inside a user turn, first
in its content); tool calls and results are content blocks; ``max_tokens`` is
required; unknown fields are rejected, so only mapped fields are sent.

Nothing here mutates the OpenAI body: every output value is a new object.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from relay_server.domain.provider import ProviderCall
from relay_server.providers.translator import unsupported

_IMAGE_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})

# Default output cap when the client gives none (Anthropic requires one).
# First matching prefix wins; these are the models' documented maximums.
_DEFAULT_MAX_TOKENS: tuple[tuple[str, int], ...] = (
    ("claude-3-5", 8192),
    ("claude-3-7", 8192),
    ("claude-sonnet-4", 8192),
    ("claude-opus-4", 8192),
    ("claude-haiku-4", 8192),
    ("claude-3-", 4096),
)
_FALLBACK_MAX_TOKENS = 4096


def default_max_tokens(model: str) -> int:
    for prefix, limit in _DEFAULT_MAX_TOKENS:
        if model.startswith(prefix):
            return limit
    return _FALLBACK_MAX_TOKENS


def build_body(call: ProviderCall, *, stream: bool) -> dict[str, Any]:
    body = call.body
    if body.get("n") not in (None, 1):
        raise unsupported("this model supports only n=1", param="n")
    response_format = body.get("response_format")
    if isinstance(response_format, Mapping) and response_format.get("type") not in (None, "text"):
        raise unsupported("response_format is not supported by this model", param="response_format")

    system, messages = convert_messages(body.get("messages"))
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or default_max_tokens(call.provider_model)
    out: dict[str, Any] = {"model": call.provider_model, "max_tokens": max_tokens, "messages": messages}
    if system is not None:
        out["system"] = system
    for name in ("temperature", "top_p", "top_k"):
        if body.get(name) is not None:
            out[name] = body[name]
    stop = body.get("stop")
    if isinstance(stop, str):
        out["stop_sequences"] = [stop]
    elif isinstance(stop, list) and stop:
        out["stop_sequences"] = list(stop)
    tools = body.get("tools")
    if tools:
        out["tools"] = convert_tools(tools)
    tool_choice = convert_tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
    if tool_choice is not None and tools:
        out["tool_choice"] = tool_choice
    if isinstance(body.get("user"), str):
        out["metadata"] = {"user_id": body["user"]}
    if stream:
        out["stream"] = True
    return out


# -- messages ---------------------------------------------------------------


def convert_messages(messages: Any) -> tuple[str | list[dict[str, Any]] | None, list[dict[str, Any]]]:
    """(system, messages) in Anthropic's shape."""
    if not isinstance(messages, list) or not messages:
        raise unsupported("'messages' must be a non-empty list", param="messages")
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        param = f"messages[{i}]"
        if not isinstance(message, Mapping):
            raise unsupported("each message must be an object", param=param)
        role = message.get("role")
        match role:
            case "system" | "developer":
                system.extend(_text_blocks(message.get("content"), f"{param}.content"))
            case "user":
                _append(turns, "user", _user_blocks(message.get("content"), f"{param}.content"))
            case "assistant":
                _append(turns, "assistant", _assistant_blocks(message, param))
            case "tool":
                _append(turns, "user", [_tool_result(message, param)])
            case _:
                raise unsupported(f"unsupported message role {role!r}", param=f"{param}.role")
    for turn in turns:
        if turn["role"] == "user":
            # Anthropic wants tool results before any text in a user turn.
            turn["content"].sort(key=lambda block: block["type"] != "tool_result")
    return _system_value(system), turns


def _append(turns: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    if not blocks:
        return  # Anthropic rejects empty turns; an empty message adds nothing
    if turns and turns[-1]["role"] == role:
        turns[-1]["content"].extend(blocks)  # merge: roles must alternate
    else:
        turns.append({"role": role, "content": list(blocks)})


def _system_value(blocks: list[dict[str, Any]]) -> str | list[dict[str, Any]] | None:
    if not blocks:
        return None
    if len(blocks) == 1 and set(blocks[0]) == {"type", "text"}:
        return blocks[0]["text"]
    return blocks


def _text_blocks(content: Any, param: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise unsupported("message content must be a string or a list of parts", param=param)
    blocks = []
    for k, part in enumerate(content):
        if not isinstance(part, Mapping) or part.get("type") != "text":
            raise unsupported("only text parts are allowed here", param=f"{param}[{k}]")
        block = _text_part(part, f"{param}[{k}]")
        if block is not None:
            blocks.append(block)
    return blocks


def _text_part(part: Mapping[str, Any], param: str) -> dict[str, Any] | None:
    text = part.get("text")
    if not isinstance(text, str):
        raise unsupported("a text part needs a string 'text'", param=param)
    if not text:
        return None  # Anthropic rejects empty text blocks
    block: dict[str, Any] = {"type": "text", "text": text}
    if part.get("cache_control") is not None:
        block["cache_control"] = part["cache_control"]  # prompt caching hint, Anthropic's own field
    return block


def _user_blocks(content: Any, param: str) -> list[dict[str, Any]]:
    if not isinstance(content, list):
        return _text_blocks(content, param)
    blocks = []
    for k, part in enumerate(content):
        part_param = f"{param}[{k}]"
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind == "text":
            block = _text_part(part, part_param)
            if block is not None:
                blocks.append(block)
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, Mapping) else image
            if not isinstance(url, str):
                raise unsupported("an image_url part needs a 'url'", param=part_param)
            blocks.append(_image_block(url, part_param))
        else:
            raise unsupported(f"content part type {kind!r} is not supported by this model", param=part_param)
    return blocks


def _image_block(url: str, param: str) -> dict[str, Any]:
    if url.startswith("data:"):
        header, sep, data = url[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        if not sep or encoding != "base64" or not data:
            raise unsupported("image data URLs must be base64-encoded", param=param)
        if media_type not in _IMAGE_MEDIA_TYPES:
            raise unsupported(f"image type {media_type!r} is not supported", param=param)
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    if url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise unsupported("image URLs must be http(s) or base64 data URLs", param=param)


def _assistant_blocks(message: Mapping[str, Any], param: str) -> list[dict[str, Any]]:
    content = message.get("content")
    if isinstance(content, list):
        # Assistant parts are text or refusal; a refusal is replayed as text.
        content = [
            {"type": "text", "text": p.get("refusal", "")} if isinstance(p, Mapping) and p.get("type") == "refusal" else p
            for p in content
        ]
    blocks = _text_blocks(content, f"{param}.content")
    tool_calls = message.get("tool_calls") or []
    if not isinstance(tool_calls, list):
        raise unsupported("tool_calls must be a list", param=f"{param}.tool_calls")
    for j, call in enumerate(tool_calls):
        blocks.append(_tool_use(call, f"{param}.tool_calls[{j}]"))
    return blocks


def _tool_use(call: Any, param: str) -> dict[str, Any]:
    function = call.get("function") if isinstance(call, Mapping) else None
    if not isinstance(function, Mapping) or not isinstance(function.get("name"), str) or not call.get("id"):
        raise unsupported("a tool call needs an id and a function name", param=param)
    arguments = function.get("arguments") or "{}"
    try:
        parsed = orjson.loads(arguments) if isinstance(arguments, str) else arguments
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, Mapping):
        raise unsupported("tool call arguments must be a JSON object", param=f"{param}.function.arguments")
    return {"type": "tool_use", "id": call["id"], "name": function["name"], "input": dict(parsed)}


def _tool_result(message: Mapping[str, Any], param: str) -> dict[str, Any]:
    tool_call_id = message.get("tool_call_id")
    if not isinstance(tool_call_id, str) or not tool_call_id:
        raise unsupported("a tool message needs a 'tool_call_id'", param=f"{param}.tool_call_id")
    content = message.get("content")
    result: dict[str, Any] = {"type": "tool_result", "tool_use_id": tool_call_id}
    if isinstance(content, str):
        result["content"] = content
    elif content is not None:
        result["content"] = _text_blocks(content, f"{param}.content")
    return result


# -- tools ------------------------------------------------------------------


def convert_tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise unsupported("'tools' must be a list", param="tools")
    out = []
    for k, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if not isinstance(function, Mapping) or tool.get("type") != "function" or not function.get("name"):
            raise unsupported("only function tools with a name are supported", param=f"tools[{k}]")
        converted: dict[str, Any] = {
            "name": function["name"],
            "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
        }
        if function.get("description"):
            converted["description"] = function["description"]
        out.append(converted)
    return out


def convert_tool_choice(choice: Any, parallel_tool_calls: Any) -> dict[str, Any] | None:
    result: dict[str, Any] | None
    match choice:
        case None:
            result = None
        case "auto":
            result = {"type": "auto"}
        case "none":
            result = {"type": "none"}
        case "required":
            result = {"type": "any"}
        case {"type": "function", "function": {"name": str(name)}}:
            result = {"type": "tool", "name": name}
        case _:
            raise unsupported("unsupported tool_choice", param="tool_choice")
    if parallel_tool_calls is False:
        result = result or {"type": "auto"}
        if result["type"] != "none":
            result["disable_parallel_tool_use"] = True
    return result
