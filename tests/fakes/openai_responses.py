"""OpenAI's ``POST /v1/responses`` for the fake OpenAI server: a response object, or its SSE events.

The fake keeps no state, like OpenAI with ``store: false``: a ``previous_response_id`` it is sent
is unknown to it (400), which is how the tests see that Relay inlines the conversation instead.
Its ids (``resp_up…``, ``msg_up…``, ``fc_up…``) are its own; Relay must replace them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.faults import (
    Fault,
    Reply,
    count_tokens,
    json_error,
    json_pieces,
    pieces,
    texts_in,
)


def prompt_tokens(body: dict[str, Any]) -> int:
    return sum(count_tokens(t) for t in texts_in([body.get("instructions") or "", body.get("input")]))


def refusal(body: dict[str, Any]) -> web.Response | None:
    previous = body.get("previous_response_id")
    if previous:
        error = {"message": f"Previous response with id '{previous}' not found.", "type": "invalid_request_error",
                 "param": "previous_response_id", "code": "previous_response_not_found"}  # fmt: skip
        return json_error(400, {"error": error})
    if body.get("input") is None:
        return json_error(400, {"error": {"message": "Missing required parameter: 'input'.", "type": "invalid_request_error",
                                          "param": "input", "code": "missing_required_parameter"}})  # fmt: skip
    return None


def _usage(prompt: int, completion: int) -> dict[str, Any]:
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": completion,
            "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": prompt + completion}  # fmt: skip


def _response(body: dict[str, Any], status: str, output: list[dict[str, Any]], usage: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "id": "resp_upstream0001", "object": "response", "created_at": int(time.time()), "status": status,
        "model": body.get("model"), "output": output, "usage": usage, "error": None, "incomplete_details": None,
        "instructions": body.get("instructions"), "previous_response_id": None, "store": body.get("store", True),
        "tools": body.get("tools") or [], "tool_choice": body.get("tool_choice", "auto"), "parallel_tool_calls": True,
        "text": body.get("text") or {"format": {"type": "text"}}, "metadata": body.get("metadata") or {},
        "temperature": 1.0, "top_p": 1.0, "truncation": "disabled", "background": False,
    }  # fmt: skip


def _message(text: str) -> dict[str, Any]:
    return {"id": "msg_upstream0001", "type": "message", "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}  # fmt: skip


def _call(i: int, name: str, args: dict[str, Any]) -> dict[str, Any]:
    return {"id": f"fc_upstream000{i}", "type": "function_call", "call_id": f"call_{i}", "name": name,
            "arguments": orjson.dumps(args).decode(), "status": "completed"}  # fmt: skip


def output(reply: Reply) -> list[dict[str, Any]]:
    items = [_message(reply.text)] if reply.text else []
    return items + [_call(i, name, args) for i, (name, args) in enumerate(reply.tool_calls)]


def completion_tokens(reply: Reply) -> int:
    return count_tokens(reply.text) + sum(len(json_pieces(orjson.dumps(a).decode())) for _, a in reply.tool_calls)


def whole(body: dict[str, Any], reply: Reply, prompt: int) -> dict[str, Any]:
    return _response(body, "completed", output(reply), _usage(prompt, completion_tokens(reply)))


def events(body: dict[str, Any], reply: Reply, prompt: int, fault: Fault) -> Iterator[tuple[str, dict[str, Any]]]:
    """The SSE events of one streamed response, numbered from 0."""
    seq = iter(range(10_000))

    def event(kind: str, **fields: Any) -> tuple[str, dict[str, Any]]:
        return kind, {"type": kind, "sequence_number": next(seq), **fields}

    yield event("response.created", response=_response(body, "in_progress", [], None))
    yield event("response.in_progress", response=_response(body, "in_progress", [], None))
    items = output(reply)
    for index, item in enumerate(items):
        if item["type"] == "message":
            text = item["content"][0]["text"]
            yield event("response.output_item.added", output_index=index, item={**item, "status": "in_progress", "content": []})
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            yield event("response.content_part.added", item_id=item["id"], output_index=index, content_index=0, part=part)
            for piece in pieces(text):
                yield event("response.output_text.delta", item_id=item["id"], output_index=index, content_index=0,
                            delta=piece, logprobs=[])  # fmt: skip
            yield event("response.output_text.done", item_id=item["id"], output_index=index, content_index=0, text=text, logprobs=[])
            yield event("response.content_part.done", item_id=item["id"], output_index=index, content_index=0,
                        part={**part, "text": text})  # fmt: skip
        else:
            yield event("response.output_item.added", output_index=index, item={**item, "arguments": "", "status": "in_progress"})
            for part in json_pieces(item["arguments"]):
                yield event("response.function_call_arguments.delta", item_id=item["id"], output_index=index, delta=part)
            yield event("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                        name=item["name"], arguments=item["arguments"])  # fmt: skip
        yield event("response.output_item.done", output_index=index, item=item)
    usage = None if fault.no_usage else _usage(prompt, completion_tokens(reply))
    yield event("response.completed", response=_response(body, "completed", items, usage))


def error_event() -> tuple[str, str]:
    data = {"type": "error", "code": "server_error", "message": "The server had an error while processing your request.",
            "param": None, "sequence_number": 9999}  # fmt: skip
    return "error", orjson.dumps(data).decode()


def hang_event() -> tuple[str, str]:
    data = {"type": "response.output_text.delta", "item_id": "msg_upstream0001", "output_index": 0, "content_index": 0,
            "delta": "more ", "logprobs": [], "sequence_number": 9999}  # fmt: skip
    return "response.output_text.delta", orjson.dumps(data).decode()
