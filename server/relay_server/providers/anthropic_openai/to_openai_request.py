"""Anthropic Messages request -> OpenAI chat request (pure functions).

The Anthropic door decodes every request into this OpenAI form, which the pipeline speaks
(authentication, limits and the spend reservation from ``max_tokens``, the response cache,
routing) and which every OpenAI-shaped provider translator and test mode answer.  A Claude
model on the Anthropic provider never sees this form: it gets the client's own body
(``anthropic_native``).  So this translation must accept everything Anthropic accepts; what
the OpenAI form cannot express is left out (server tools, ``top_k``, ``cache_control``,
thinking blocks replayed in history) rather than refused, and only requests Anthropic itself
would reject get a 400.

Content blocks ↔ messages:
- ``system`` (string or text blocks) → one ``system`` message;
- user ``text`` / ``image`` / ``document`` blocks → content parts; each ``tool_result`` → its own
  ``tool`` message (its text; ``is_error`` says "Error: ..."), placed before the user's other
  content (as Anthropic requires it first); a result's images follow in the user's message;
- assistant ``text`` → content, ``tool_use`` → ``tool_calls`` (several per turn, in order);
- ``thinking`` asked → ``reasoning_effort`` (from ``budget_tokens``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from relay_server.errors import ErrorKind, RelayError

_EFFORT_BUDGETS = ((4096, "low"), (16384, "medium"))


def invalid(message: str, param: str | None = None) -> RelayError:
    return RelayError(ErrorKind.BAD_REQUEST, message, param=param)


def openai_request(body: Mapping[str, Any]) -> dict[str, Any]:
    """The OpenAI chat form of an Anthropic Messages body (validated the way Anthropic validates)."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("model: Field required", "model")
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise invalid("max_tokens: Field required (an integer of at least 1)", "max_tokens")
    out: dict[str, Any] = {"model": model, "messages": _messages(body), "max_tokens": max_tokens}
    for name in ("temperature", "top_p"):
        value = body.get(name)
        if value is not None:
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise invalid(f"{name}: Input should be a valid number", name)
            out[name] = value
    stops = body.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise invalid("stop_sequences: Input should be a list of strings", "stop_sequences")
        if stops:
            out["stop"] = list(stops)
    tools = _tools(body.get("tools"))
    if tools:
        out["tools"] = tools
        choice, parallel = _tool_choice(body.get("tool_choice"))
        if choice is not None:
            out["tool_choice"] = choice
        if parallel is False:
            out["parallel_tool_calls"] = False
    metadata = body.get("metadata")
    if isinstance(metadata, Mapping) and isinstance(metadata.get("user_id"), str):
        out["user"] = metadata["user_id"]
    effort = _reasoning_effort(body.get("thinking"))
    if effort is not None:
        out["reasoning_effort"] = effort
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise invalid("stream: Input should be a valid boolean", "stream")
    if stream:
        out["stream"] = True
        # The door always needs the usage chunk: message_delta reports the stream's usage.
        out["stream_options"] = {"include_usage": True}
    return out


# -- messages ---------------------------------------------------------------


def _messages(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    system = _system_text(body.get("system"))
    if system:
        out.append({"role": "system", "content": system})
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid("messages: at least one message is required", "messages")
    for i, message in enumerate(messages):
        param = f"messages.{i}"
        if not isinstance(message, Mapping):
            raise invalid(f"{param}: Input should be an object", param)
        role = message.get("role")
        blocks = _blocks(message.get("content"), f"{param}.content")
        if role == "user":
            out.extend(_user(blocks, param))
        elif role == "assistant":
            assistant = _assistant(blocks, param)
            if assistant is not None:
                out.append(assistant)
        else:
            raise invalid(f"{param}.role: Input should be 'user' or 'assistant'", f"{param}.role")
    return out


def _system_text(system: Any) -> str:
    if system is None or isinstance(system, str):
        return system or ""
    texts = []
    for k, block in enumerate(_blocks(system, "system")):
        if block.get("type") != "text":
            raise invalid(f"system.{k}: only text blocks are allowed", f"system.{k}")
        texts.append(_text(block, f"system.{k}"))
    return "\n\n".join(t for t in texts if t)


def _blocks(content: Any, param: str) -> list[Mapping[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list) or not all(isinstance(b, Mapping) for b in content):
        raise invalid(f"{param}: Input should be a string or a list of content blocks", param)
    for k, block in enumerate(content):
        if not isinstance(block.get("type"), str):
            raise invalid(f"{param}.{k}.type: Field required", f"{param}.{k}.type")
    return content


def _text(block: Mapping[str, Any], param: str) -> str:
    text = block.get("text")
    if not isinstance(text, str):
        raise invalid(f"{param}.text: Field required", f"{param}.text")
    return text


def _user(blocks: list[Mapping[str, Any]], param: str) -> list[dict[str, Any]]:
    tool_messages: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for k, block in enumerate(blocks):
        where = f"{param}.content.{k}"
        match block["type"]:
            case "text":
                text = _text(block, where)
                if text:
                    parts.append({"type": "text", "text": text})
            case "image":
                parts.append(_image(block.get("source"), where))
            case "document":
                parts.append(_document(block, where))
            case "tool_result":
                message, images = _tool_result(block, where)
                tool_messages.append(message)
                parts.extend(images)  # OpenAI tool messages are text: images follow as the user's
            case _:
                pass  # search results, container uploads...: Claude-only blocks
    if not parts:
        return tool_messages
    if all(p["type"] == "text" for p in parts):
        content: str | list[dict[str, Any]] = "".join(p["text"] for p in parts) if len(parts) == 1 else parts
    else:
        content = parts
    return [*tool_messages, {"role": "user", "content": content}]


def _image(source: Any, param: str) -> dict[str, Any]:
    if isinstance(source, Mapping) and source.get("type") == "base64":
        media_type, data = source.get("media_type"), source.get("data")
        if not isinstance(media_type, str) or not isinstance(data, str) or not data:
            raise invalid(f"{param}.source: a base64 image needs media_type and data", f"{param}.source")
        return {"type": "image_url", "image_url": {"url": f"data:{media_type};base64,{data}"}}
    if isinstance(source, Mapping) and source.get("type") == "url" and isinstance(source.get("url"), str):
        return {"type": "image_url", "image_url": {"url": source["url"]}}
    raise invalid(f"{param}.source: images need a base64 or url source", f"{param}.source")


def _document(block: Mapping[str, Any], param: str) -> dict[str, Any]:
    raw = block.get("source")
    source: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    kind = source.get("type")
    if kind == "text" and isinstance(source.get("data"), str):
        return {"type": "text", "text": source["data"]}
    if kind == "base64" and isinstance(source.get("data"), str):
        media_type = source.get("media_type") or "application/pdf"
        filename = block.get("title") if isinstance(block.get("title"), str) else "document.pdf"
        return {"type": "file", "file": {"filename": filename, "file_data": f"data:{media_type};base64,{source['data']}"}}
    if kind == "url" and isinstance(source.get("url"), str):
        return {"type": "text", "text": source["url"]}
    raise invalid(f"{param}.source: documents need a text, base64 or url source", f"{param}.source")


def _tool_result(block: Mapping[str, Any], param: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(the ``tool`` message, the result's images as content parts)."""
    tool_use_id = block.get("tool_use_id")
    if not isinstance(tool_use_id, str) or not tool_use_id:
        raise invalid(f"{param}.tool_use_id: Field required", f"{param}.tool_use_id")
    content = block.get("content")
    images: list[dict[str, Any]] = []
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    else:
        blocks = _blocks(content, f"{param}.content")
        text = "".join(_text(b, param) for b in blocks if b.get("type") == "text")
        images = [_image(b.get("source"), f"{param}.content.{k}") for k, b in enumerate(blocks) if b.get("type") == "image"]
    if block.get("is_error") is True:
        text = f"Error: {text}" if text else "Error"
    return {"role": "tool", "tool_call_id": tool_use_id, "content": text}, images


def _assistant(blocks: list[Mapping[str, Any]], param: str) -> dict[str, Any] | None:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for k, block in enumerate(blocks):
        where = f"{param}.content.{k}"
        match block["type"]:
            case "text":
                texts.append(_text(block, where))
            case "tool_use":
                calls.append(_tool_call(block, where))
            case _:
                pass  # thinking / redacted_thinking: only Claude can read them back
    if not texts and not calls:
        return None
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    return message


def _tool_call(block: Mapping[str, Any], param: str) -> dict[str, Any]:
    call_id, name = block.get("id"), block.get("name")
    if not isinstance(call_id, str) or not isinstance(name, str) or not call_id or not name:
        raise invalid(f"{param}: a tool_use block needs an id and a name", param)
    arguments = block.get("input") if block.get("input") is not None else {}
    if not isinstance(arguments, Mapping):
        raise invalid(f"{param}.input: Input should be an object", f"{param}.input")
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": orjson.dumps(arguments).decode()}}


# -- tools --------------------------------------------------------------------


def _tools(tools: Any) -> list[dict[str, Any]]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise invalid("tools: Input should be a list", "tools")
    out = []
    for k, tool in enumerate(tools):
        if not isinstance(tool, Mapping):
            raise invalid(f"tools.{k}: Input should be an object", f"tools.{k}")
        if tool.get("type") not in (None, "custom"):
            continue  # server tools (web search, code execution...) run at Anthropic only
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise invalid(f"tools.{k}.name: Field required", f"tools.{k}.name")
        schema = tool.get("input_schema")
        if not isinstance(schema, Mapping):
            raise invalid(f"tools.{k}.input_schema: Field required", f"tools.{k}.input_schema")
        function: dict[str, Any] = {"name": name, "parameters": dict(schema)}
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: Any) -> tuple[Any, bool | None]:
    """(OpenAI tool_choice, parallel_tool_calls) from Anthropic's tool_choice."""
    if choice is None:
        return None, None
    if not isinstance(choice, Mapping):
        raise invalid("tool_choice: Input should be an object", "tool_choice")
    parallel = False if choice.get("disable_parallel_tool_use") is True else None
    match choice.get("type"):
        case "auto":
            return "auto", parallel
        case "any":
            return "required", parallel
        case "none":
            return "none", None
        case "tool" if isinstance(choice.get("name"), str):
            return {"type": "function", "function": {"name": choice["name"]}}, parallel
    raise invalid("tool_choice: type must be auto, any, tool (with a name) or none", "tool_choice")


def _reasoning_effort(thinking: Any) -> str | None:
    if not isinstance(thinking, Mapping) or thinking.get("type") != "enabled":
        return None
    budget = thinking.get("budget_tokens")
    if not isinstance(budget, int) or isinstance(budget, bool) or budget < 1:
        raise invalid("thinking.budget_tokens: Field required", "thinking.budget_tokens")
    return next((effort for limit, effort in _EFFORT_BUDGETS if budget < limit), "high")
