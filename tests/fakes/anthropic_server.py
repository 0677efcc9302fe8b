"""A fake Anthropic Messages provider (``/v1/messages``, ``/v1/models``).

It validates requests the way Anthropic does where a translator could get it
wrong (version header, required ``max_tokens``, alternating roles starting with
``user``, tool results first in their turn and answering the previous turn's
tool calls, no unknown top-level fields), so integration tests catch shapes the
real API would reject.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.faults import (
    FakeServer,
    Fault,
    count_tokens,
    json_error,
    json_pieces,
    pieces,
    texts_in,
)

_TOP_LEVEL = frozenset(
    {
        "model", "messages", "max_tokens", "system", "temperature", "top_p", "top_k", "stop_sequences",
        "stream", "tools", "tool_choice", "metadata", "thinking", "service_tier",
    }
)
_BLOCK_TYPES = frozenset({"text", "image", "tool_use", "tool_result", "document", "thinking"})
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


class FakeAnthropic(FakeServer):
    def __init__(self) -> None:
        super().__init__()
        self.cache_read_tokens = 0
        self.cache_write_tokens = 0
        self.usage_on_delta = False
        """Report input and cache tokens on message_delta only (message_start then says 0), as
        some Anthropic streams do."""

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/messages", self._messages), web.post("/v1/messages/count_tokens", self._count_tokens),
                web.get("/v1/models", self._models)]

    async def _count_tokens(self, request: web.Request) -> web.StreamResponse:
        body, fault = await self.receive(request)
        refusal = self._refuse(request, fault)
        if refusal is not None:
            return refusal
        allowed = {"model", "messages", "system", "tools", "tool_choice", "thinking", "mcp_servers"}
        extra = sorted(set(body or {}) - allowed)
        if extra:
            return _error(400, f"{extra[0]}: Extra inputs are not permitted")
        return web.json_response({"input_tokens": sum(count_tokens(t) for t in texts_in([body.get("system"), body["messages"]]))})

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body, fault = await self.receive(request)
        refusal = self._refuse(request, fault) or _validate(body)
        if refusal is not None:
            return refusal
        await self.pause(fault)
        reply = self.next_reply()
        prompt = sum(count_tokens(t) for t in texts_in([body.get("system"), body["messages"]]))
        text_pieces = pieces(reply.text)
        stop_reason = "tool_use" if reply.tool_calls else "end_turn"
        if len(text_pieces) > body["max_tokens"]:
            text_pieces, stop_reason, tool_calls = text_pieces[: body["max_tokens"]], "max_tokens", []
        else:
            tool_calls = reply.tool_calls
        completion = len(text_pieces) + sum(len(json_pieces(orjson.dumps(a).decode())) for _, a in tool_calls)
        self.bill(prompt, completion)
        usage = {
            "input_tokens": prompt,
            "output_tokens": completion,
            "cache_read_input_tokens": self.cache_read_tokens,
            "cache_creation_input_tokens": self.cache_write_tokens,
        }
        if body.get("stream"):
            frames = self._frames(body, text_pieces, tool_calls, stop_reason, usage, reply.thinking)
            error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
            hang = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "more "}}
            return await self.run_stream(
                request,
                fault,
                ((event, orjson.dumps(data).decode()) for event, data in frames),
                error_frame=("error", orjson.dumps(error).decode()),
                hang_frame=("content_block_delta", orjson.dumps(hang).decode()),
            )
        content: list[dict[str, Any]] = []
        if reply.thinking:
            content.append({"type": "thinking", "thinking": reply.thinking, "signature": "c2lnbmVkLWJ5LWZha2U="})
        if text_pieces:
            content.append({"type": "text", "text": "".join(text_pieces)})
        for i, (name, args) in enumerate(tool_calls):
            content.append({"type": "tool_use", "id": f"toolu_{i}", "name": name, "input": args})
        return web.json_response(
            {
                "id": "msg_fake",
                "type": "message",
                "role": "assistant",
                "model": body["model"],
                "content": content,
                "stop_reason": stop_reason,
                "stop_sequence": None,
                "usage": usage,
            }
        )

    def _frames(
        self,
        body: dict[str, Any],
        text_pieces: list[str],
        tool_calls: list[tuple[str, dict[str, Any]]],
        stop_reason: str,
        usage: dict[str, Any],
        thinking: str = "",
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        start_usage = {**usage, "output_tokens": 1}
        delta_usage = {"output_tokens": usage["output_tokens"]}
        if self.usage_on_delta:
            start_usage = {**start_usage, "input_tokens": 0, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}
            delta_usage = dict(usage)
        message = {
            "id": "msg_fake", "type": "message", "role": "assistant", "model": body["model"], "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": start_usage,
        }
        yield "message_start", {"type": "message_start", "message": message}
        index = 0
        if thinking:
            block = {"type": "thinking", "thinking": "", "signature": ""}
            yield "content_block_start", {"type": "content_block_start", "index": 0, "content_block": block}
            yield "ping", {"type": "ping"}
            for piece in pieces(thinking):
                delta = {"type": "thinking_delta", "thinking": piece}
                yield "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}
            signature = {"type": "signature_delta", "signature": "c2lnbmVkLWJ5LWZha2U="}
            yield "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": signature}
            yield "content_block_stop", {"type": "content_block_stop", "index": 0}
            index = 1
        if text_pieces:
            block = {"type": "text", "text": ""}
            yield "content_block_start", {"type": "content_block_start", "index": index, "content_block": block}
            if not thinking:
                yield "ping", {"type": "ping"}
            for piece in text_pieces:
                delta = {"type": "text_delta", "text": piece}
                yield "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
            yield "content_block_stop", {"type": "content_block_stop", "index": index}
            index += 1
        for i, (name, args) in enumerate(tool_calls):
            block = {"type": "tool_use", "id": f"toolu_{i}", "name": name, "input": {}}
            yield "content_block_start", {"type": "content_block_start", "index": index, "content_block": block}
            for part in json_pieces(orjson.dumps(args).decode()):
                delta = {"type": "input_json_delta", "partial_json": part}
                yield "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
            yield "content_block_stop", {"type": "content_block_stop", "index": index}
            index += 1
        delta = {"stop_reason": stop_reason, "stop_sequence": None}
        yield "message_delta", {"type": "message_delta", "delta": delta, "usage": delta_usage}
        yield "message_stop", {"type": "message_stop"}

    async def _models(self, request: web.Request) -> web.StreamResponse:
        _, fault = await self.receive(request)
        refusal = self._refuse(request, fault)
        if refusal is not None:
            return refusal
        data = [
            {"type": "model", "id": "claude-3-5-sonnet-20241022", "display_name": "Claude 3.5 Sonnet",
             "created_at": "2024-10-22T00:00:00Z"},
        ]
        return web.json_response({"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[0]["id"]})

    def _refuse(self, request: web.Request, fault: Fault) -> web.Response | None:
        if fault.status is not None:
            return _error(fault.status, fault.message, fault.retry_after)
        key = request.headers.get("x-api-key", "")
        if not key or (self.valid_keys is not None and key not in self.valid_keys):
            return _error(401, "invalid x-api-key")
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", request.headers.get("anthropic-version", "")):
            return _error(400, "anthropic-version header is required")
        return None


def _error(status: int, message: str, retry_after: str | None = None) -> web.Response:
    body = {"type": "error", "error": {"type": _ERROR_TYPES.get(status, "api_error"), "message": message}}
    return json_error(status, body, retry_after)


def _validate(body: Any) -> web.Response | None:
    """The request rules Anthropic enforces that a translator could break."""
    if not isinstance(body, dict):
        return _error(400, "request body must be a JSON object")
    extra = sorted(set(body) - _TOP_LEVEL)
    if extra:
        return _error(400, f"{extra[0]}: Extra inputs are not permitted")
    if not isinstance(body.get("max_tokens"), int):
        return _error(400, "max_tokens: Field required")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return _error(400, "messages: at least one message is required")
    previous_tool_ids: set[str] = set()
    for i, message in enumerate(messages):
        expected = "user" if i % 2 == 0 else "assistant"
        if message.get("role") != expected:
            return _error(400, f"messages.{i}: roles must alternate between user and assistant, starting with user")
        content = message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(blocks, list) or not blocks:
            return _error(400, f"messages.{i}: content must be a non-empty string or list")
        seen_other = False
        for block in blocks:
            kind = block.get("type") if isinstance(block, dict) else None
            if kind not in _BLOCK_TYPES:
                return _error(400, f"messages.{i}.content: unknown block type {kind!r}")
            if kind == "text" and not block.get("text"):
                return _error(400, f"messages.{i}.content: text content blocks must be non-empty")
            if kind == "tool_result":
                if seen_other:
                    return _error(400, f"messages.{i}: tool_result blocks must come first")
                if block.get("tool_use_id") not in previous_tool_ids:
                    return _error(400, f"messages.{i}: unexpected tool_use_id {block.get('tool_use_id')!r}")
            else:
                seen_other = True
        previous_tool_ids = {b["id"] for b in blocks if b.get("type") == "tool_use"}
    return None
