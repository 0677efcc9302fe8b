"""A Responses request → the chat completions form (and the native Responses body).

``parse_turn`` validates the client's body and normalises its ``input`` into items (each with a
Relay id, as the input_items listing shows them).  ``to_chat`` turns the conversation — the items
of the previous turns (their inputs and outputs, oldest first) followed by this turn's — into a
chat body: ``instructions`` → a system message, messages → messages, ``function_call`` items →
an assistant message's ``tool_calls``, ``function_call_output`` → ``role: tool`` messages,
``text.format`` → ``response_format``, ``max_output_tokens`` → ``max_completion_tokens``,
``reasoning.effort`` → ``reasoning_effort``.  ``native_body`` is what a provider that serves the
Responses API itself receives: the client's body, unknown fields kept, with the conversation
inlined and Relay's own state fields removed (Relay owns ids and history, not the provider).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from relay_server.errors import ErrorKind, RelayError
from relay_server.ids import new_id

# Tools Relay cannot run for a provider that does not host them: refused, named, up front.
FUNCTION_TOOL = "function"
_MESSAGE_ROLES = ("user", "system", "developer", "assistant")
_TEXT_PARTS = ("input_text", "output_text", "text", "refusal")
# Fields that are Relay's conversation state, never forwarded to a native provider.
_RELAY_STATE = ("previous_response_id", "store", "background", "metadata", "conversation", "stream_options")


@dataclass(frozen=True, slots=True)
class Turn:
    """One validated Responses request."""

    body: Mapping[str, Any]
    model: str
    input_items: list[dict[str, Any]]
    """This request's input, normalised (``type`` explicit, content as parts, a Relay ``id``)."""
    instructions: str | None = None
    previous_response_id: str | None = None
    store: bool = True
    background: bool = False
    stream: bool = False
    metadata: dict[str, str] | None = None
    tools: list[dict[str, Any]] = field(default_factory=list)


def _bad(message: str, param: str | None, code: str = "invalid_value") -> RelayError:
    return RelayError(ErrorKind.BAD_REQUEST, message, param=param, code=code)


def _flag(body: Mapping[str, Any], name: str, default: bool) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _bad(f"Invalid type for '{name}': expected a boolean.", name, "invalid_type")
    return value


def parse_turn(body: Mapping[str, Any]) -> Turn:
    """Validate a Responses request body; 400s name the offending parameter."""
    model = body.get("model")
    if model is None or model == "":
        raise _bad("you must provide a model parameter", "model", "missing_required_parameter")
    if not isinstance(model, str):
        raise _bad("'model' must be a string.", "model", "invalid_type")
    previous = body.get("previous_response_id")
    if previous is not None and (not isinstance(previous, str) or not previous):
        raise _bad("'previous_response_id' must be a response id.", "previous_response_id", "invalid_type")
    raw_input = body.get("input")
    if raw_input is None and previous is None:
        raise _bad("Missing required parameter: 'input'.", "input", "missing_required_parameter")
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise _bad("'instructions' must be a string.", "instructions", "invalid_type")
    metadata = body.get("metadata")
    if metadata is not None and (
        not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()) or len(metadata) > 16
    ):
        raise _bad("'metadata' must be an object of at most 16 string values.", "metadata", "invalid_type")
    for name, low, high in (("temperature", 0, 2), ("top_p", 0, 1), ("max_output_tokens", 1, 2**31 - 1)):
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _bad(f"Invalid type for '{name}': expected a number.", name, "invalid_type")
        if not low <= value <= high:
            raise RelayError(
                ErrorKind.INVALID_REQUEST, f"Invalid '{name}': {value} is out of range; expected a value from {low} to {high}.",
                param=name, code="invalid_value",
            )  # fmt: skip
    truncation = body.get("truncation")
    if truncation not in (None, "auto", "disabled"):
        raise _bad(f"Invalid value for 'truncation': {truncation!r}. Supported values are: 'auto' and 'disabled'.", "truncation")
    if body.get("conversation") is not None:
        # Dropping it would answer without the conversation's history, as if it were a new one.
        raise _bad(
            "Relay does not keep Conversations objects: continue a conversation with 'previous_response_id'.",
            "conversation", "unsupported_parameter",
        )  # fmt: skip
    store = _flag(body, "store", True)
    background = _flag(body, "background", False)
    stream = _flag(body, "stream", False)
    if background and not store:
        raise _bad("A background response must be stored: set 'store' to true.", "background")
    if background and stream:
        raise _bad("Relay does not stream background responses; poll GET /v1/responses/{id} instead.", "stream")
    return Turn(
        body=body, model=model, input_items=normalise_input(raw_input), instructions=instructions,
        previous_response_id=previous, store=store, background=background, stream=stream,
        metadata=metadata, tools=_check_tools(body.get("tools")),
    )  # fmt: skip


def _check_tools(tools: Any) -> list[dict[str, Any]]:
    if tools is None:
        return []
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise _bad("'tools' must be an array of tool objects.", "tools", "invalid_type")
    builtin = sorted({str(t.get("type")) for t in tools if t.get("type") != FUNCTION_TOOL})
    if builtin:
        raise _bad(
            f"Relay serves function tools only; these built-in tools are not supported: {', '.join(builtin)}.",
            "tools", "unsupported_tool",
        )  # fmt: skip
    for i, tool in enumerate(tools):
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise _bad(f"Missing required parameter: 'tools[{i}].name'.", f"tools[{i}].name", "missing_required_parameter")
    return list(tools)


# -- input items ----------------------------------------------------------------------------


def normalise_input(raw: Any) -> list[dict[str, Any]]:
    """The request's ``input`` as items, each with a Relay id (ids the client sent are kept)."""
    if raw is None:
        return []
    if isinstance(raw, str):
        return [_message("user", [{"type": "input_text", "text": raw}], None)]
    if not isinstance(raw, list):
        raise _bad("'input' must be a string or an array of input items.", "input", "invalid_type")
    return [_item(item, f"input[{i}]") for i, item in enumerate(raw)]


def _message(role: str, content: list[dict[str, Any]], item_id: Any) -> dict[str, Any]:
    return {"id": item_id if isinstance(item_id, str) and item_id else new_id("msg"), "type": "message",
            "role": role, "content": content, "status": "completed"}  # fmt: skip


def _item(item: Any, where: str) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise _bad(f"Invalid '{where}': expected an object.", where, "invalid_type")
    kind = item.get("type", "message")
    if kind == "message":
        role = item.get("role")
        if role not in _MESSAGE_ROLES:
            raise _bad(f"Invalid value for '{where}.role': {role!r}. Supported values are: {', '.join(_MESSAGE_ROLES)}.", f"{where}.role")
        return _message(role, _parts(item.get("content"), role, f"{where}.content"), item.get("id"))
    if kind == "function_call":
        for name in ("call_id", "name", "arguments"):
            if not isinstance(item.get(name), str):
                raise _bad(f"Missing required parameter: '{where}.{name}'.", f"{where}.{name}", "missing_required_parameter")
        return {"id": item.get("id") or new_id("fc"), "type": "function_call", "call_id": item["call_id"],
                "name": item["name"], "arguments": item["arguments"], "status": "completed"}  # fmt: skip
    if kind == "function_call_output":
        if not isinstance(item.get("call_id"), str):
            raise _bad(f"Missing required parameter: '{where}.call_id'.", f"{where}.call_id", "missing_required_parameter")
        output = item.get("output")
        if not isinstance(output, (str, list)):
            raise _bad(f"Invalid type for '{where}.output': expected a string or an array.", f"{where}.output", "invalid_type")
        return {"id": item.get("id") or new_id("fco"), "type": "function_call_output", "call_id": item["call_id"],
                "output": output, "status": "completed"}  # fmt: skip
    if kind == "reasoning":
        # Kept for the record and for a native provider; a chat provider cannot take it back.
        return {**item, "id": item.get("id") or new_id("rs")}
    raise _bad(
        f"Invalid value for '{where}.type': {kind!r}. Relay accepts message, function_call, "
        "function_call_output and reasoning items.", f"{where}.type",
    )  # fmt: skip


def _parts(content: Any, role: str, where: str) -> list[dict[str, Any]]:
    text_type = "output_text" if role == "assistant" else "input_text"
    if isinstance(content, str):
        part: dict[str, Any] = {"type": text_type, "text": content}
        return [{**part, "annotations": []} if role == "assistant" else part]
    if not isinstance(content, list):
        raise _bad(f"Invalid type for '{where}': expected a string or an array of content parts.", where, "invalid_type")
    parts = []
    for i, part in enumerate(content):
        at = f"{where}[{i}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in _TEXT_PARTS:
            if not isinstance(part.get("text", part.get("refusal")), str):
                raise _bad(f"Missing required parameter: '{at}.text'.", f"{at}.text", "missing_required_parameter")
        elif kind == "input_image":
            if not isinstance(part.get("image_url"), str):
                raise _bad(f"'{at}' needs an image_url (a URL or a data: URL); file ids are not supported.", f"{at}.image_url")
        elif kind == "input_file":
            if not any(isinstance(part.get(k), str) for k in ("file_data", "file_id", "file_url")):
                raise _bad(f"'{at}' needs file_data, file_id or file_url.", at, "missing_required_parameter")
        else:
            raise _bad(f"Invalid value for '{at}.type': {kind!r}.", f"{at}.type")
        parts.append(dict(part))
    return parts


# -- → chat completions ---------------------------------------------------------------------


def _chat_part(part: Mapping[str, Any]) -> dict[str, Any] | None:
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text"):
        return {"type": "text", "text": part["text"]}
    if kind == "input_image":
        image: dict[str, Any] = {"url": part["image_url"]}
        if part.get("detail"):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_file":
        file = {k: part[k] for k in ("file_data", "file_id", "filename") if isinstance(part.get(k), str)}
        if isinstance(part.get("file_url"), str) and "file_data" not in file:
            file["file_data"] = part["file_url"]
        return {"type": "file", "file": file}
    return None  # refusals are not replayed as content


def _text(parts: Sequence[Mapping[str, Any]]) -> str:
    return "".join(str(p.get("text") or "") for p in parts if p.get("type") in ("output_text", "input_text", "text"))


def _output_text(output: Any) -> Any:
    if isinstance(output, str):
        return output
    parts = [p for p in (_chat_part(x) for x in output if isinstance(x, dict)) if p is not None]
    return parts or ""


def items_to_messages(items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Responses items → chat messages (function calls become the assistant turn's tool_calls)."""
    messages: list[dict[str, Any]] = []
    for item in items:
        kind = item.get("type", "message")
        if kind == "message":
            role = item["role"]
            content = item.get("content") or []
            if role == "assistant":
                messages.append({"role": "assistant", "content": _text(content)})
            else:
                parts = [p for p in (_chat_part(x) for x in content) if p is not None]
                only_text = all(p["type"] == "text" for p in parts)
                messages.append({"role": role, "content": "".join(p["text"] for p in parts) if only_text else parts})
        elif kind == "function_call":
            call = {"id": item["call_id"], "type": "function", "function": {"name": item["name"], "arguments": item["arguments"]}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)  # one assistant turn: its text, then its calls
                if not last.get("content"):
                    last["content"] = None
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": _output_text(item["output"])})
        # reasoning items have no chat equivalent: dropped.
    return messages


def _response_format(text: Any) -> dict[str, Any] | None:
    fmt = text.get("format") if isinstance(text, Mapping) else None
    if not isinstance(fmt, Mapping) or fmt.get("type") in (None, "text"):
        return None
    if fmt.get("type") == "json_object":
        return {"type": "json_object"}
    if fmt.get("type") == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        return {"type": "json_schema", "json_schema": schema}
    raise _bad(f"Invalid value for 'text.format.type': {fmt.get('type')!r}.", "text.format.type")


def _tool_choice(choice: Any) -> Any:
    if choice is None or isinstance(choice, str):
        return choice
    if isinstance(choice, Mapping) and choice.get("type") == FUNCTION_TOOL and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise _bad(f"Relay serves function tools only; unsupported tool_choice {choice!r}.", "tool_choice")


def to_chat(turn: Turn, history: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """The chat completions body for ``turn`` after ``history`` (previous turns' items, oldest first)."""
    body = turn.body
    messages = [{"role": "system", "content": turn.instructions}] if turn.instructions else []
    messages.extend(items_to_messages([*history, *turn.input_items]))
    if not messages:
        raise _bad("The conversation is empty: send 'input'.", "input", "missing_required_parameter")
    chat: dict[str, Any] = {"model": turn.model, "messages": messages}
    if turn.tools:
        chat["tools"] = [
            {"type": "function", "function": {k: t[k] for k in ("name", "description", "parameters", "strict") if k in t}}
            for t in turn.tools
        ]
        if body.get("parallel_tool_calls") is not None:
            chat["parallel_tool_calls"] = body["parallel_tool_calls"]
    choice = _tool_choice(body.get("tool_choice"))
    if choice is not None and turn.tools:
        chat["tool_choice"] = choice
    for name in ("temperature", "top_p", "user", "top_logprobs"):
        if body.get(name) is not None:
            chat[name] = body[name]
    if body.get("max_output_tokens") is not None:
        chat["max_completion_tokens"] = body["max_output_tokens"]
    response_format = _response_format(body.get("text"))
    if response_format is not None:
        chat["response_format"] = response_format
    reasoning = body.get("reasoning")
    if isinstance(reasoning, Mapping) and isinstance(reasoning.get("effort"), str):
        chat["reasoning_effort"] = reasoning["effort"]
    if turn.stream:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}  # the completed event carries usage
    return chat


def truncate(
    turn: Turn, history: Sequence[Mapping[str, Any]], fits: Callable[[dict[str, Any]], bool]
) -> list[Mapping[str, Any]]:
    """``truncation: "auto"``: the history without its oldest items, as few dropped as make the chat
    form ``fits`` the model's context.  Drops whole exchanges — the kept history starts at a user
    message, so no tool result is left without its call.  With ``"disabled"`` (the default) the
    history is kept whole and an over-long conversation gets the provider's error."""
    items = list(history)
    if turn.body.get("truncation") != "auto":
        return items
    while items and not fits(to_chat(turn, items)):
        items = items[1:]
        while items and not (items[0].get("type", "message") == "message" and items[0].get("role") == "user"):
            items = items[1:]
    return items


def native_body(turn: Turn, history: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """The body for a provider that serves the Responses API itself: the client's own body
    (unknown fields kept) with the whole conversation inlined and ``store: false`` — the provider
    keeps no state; Relay owns the ids and the history."""
    body = {k: v for k, v in turn.body.items() if k not in _RELAY_STATE}
    items = [*history, *turn.input_items]
    # Relay's item ids mean nothing upstream, and reasoning items need the provider's own state.
    body["input"] = [{k: v for k, v in item.items() if k != "id"} for item in items if item.get("type") != "reasoning"]
    body["store"] = False
    return body
