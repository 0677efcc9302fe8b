"""A fake OpenAI-wire provider: chat, legacy completions, embeddings, models.

``flavor`` reproduces the documented differences of OpenAI-compatible vendors:
- ``"openai"``: usage chunk only when ``stream_options.include_usage`` is set,
  ``"usage": null`` on every other chunk in that case;
- ``"mistral"``: strict bodies (OpenAI-only fields -> 422), no legacy
  completions, usage on the last content chunk of every stream;
- ``"groq"``: 400 on ``logprobs``/``logit_bias``/``top_logprobs``/``n>1``/
  ``messages[].name``, usage in ``x_groq.usage`` on the last chunk.
"""

from __future__ import annotations

import base64
import hashlib
import struct
import time
from collections.abc import Iterator
from typing import Any, Literal

import orjson
from aiohttp import web

from tests.fakes import openai_responses
from tests.fakes.faults import (
    FakeServer,
    Fault,
    Reply,
    count_tokens,
    json_error,
    json_pieces,
    pieces,
    texts_in,
)

Flavor = Literal["openai", "mistral", "groq"]

_MISTRAL_FORBIDDEN = ("stream_options", "seed", "user", "logit_bias", "logprobs", "top_logprobs", "store", "metadata")
_GROQ_FORBIDDEN = ("logprobs", "logit_bias", "top_logprobs")


class FakeOpenAI(FakeServer):
    def __init__(self, flavor: Flavor = "openai", models: tuple[str, ...] = ("gpt-4o-mini", "gpt-4o")) -> None:
        super().__init__()
        self.flavor = flavor
        self.models = models
        self.embedding_dims = 8

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/chat/completions", self._chat),
            web.post("/v1/completions", self._completions),
            web.post("/v1/embeddings", self._embeddings),
            web.get("/v1/models", self._models),
            web.post("/v1/responses", self._responses),
        ]

    # -- handlers ------------------------------------------------------------

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body, fault = await self.receive(request)
        refusal = self._refuse(request, body, fault)
        if refusal is not None:
            return refusal
        await self.pause(fault)
        reply = self.next_reply()
        prompt = sum(count_tokens(t) for t in texts_in(body.get("messages")))
        if body.get("stream"):
            return await self._stream(request, body, fault, reply, prompt, chat=True)
        completion = _completion_tokens(reply)
        self.bill(prompt, completion)
        message: dict[str, Any] = {"role": "assistant", "content": reply.text or None, "refusal": None}
        if reply.thinking:
            message["reasoning_content"] = reply.thinking
        if reply.tool_calls:
            message["tool_calls"] = [_tool_call(i, name, args) for i, (name, args) in enumerate(reply.tool_calls)]
        result: dict[str, Any] = {
            **_envelope(body, "chat.completion"),
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": "tool_calls" if reply.tool_calls else "stop",
                }
            ],
            "usage": _usage(prompt, completion),
        }
        if self.flavor == "groq":
            result["x_groq"] = {"id": "req_fake"}
        return web.json_response(result)

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        """OpenAI's Responses API (openai flavor only; tests/fakes/openai_responses.py)."""
        body, fault = await self.receive(request)
        if self.flavor != "openai":
            return json_error(404, {"error": {"message": "Not Found", "type": "invalid_request_error"}})
        refusal = self._refuse(request, body, fault) or openai_responses.refusal(body)
        if refusal is not None:
            return refusal
        await self.pause(fault)
        reply = self.next_reply()
        prompt = openai_responses.prompt_tokens(body)
        self.bill(prompt, openai_responses.completion_tokens(reply))
        if not body.get("stream"):
            return web.json_response(openai_responses.whole(body, reply, prompt))
        frames = openai_responses.events(body, reply, prompt, fault)
        return await self.run_stream(
            request, fault, ((kind, orjson.dumps(data).decode()) for kind, data in frames),
            error_frame=openai_responses.error_event(), hang_frame=openai_responses.hang_event(),
        )  # fmt: skip

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body, fault = await self.receive(request)
        if self.flavor != "openai":
            return json_error(404, {"error": {"message": "Not Found", "type": "invalid_request_error"}})
        refusal = self._refuse(request, body, fault)
        if refusal is not None:
            return refusal
        await self.pause(fault)
        reply = self.next_reply()
        prompt = sum(count_tokens(t) for t in texts_in(body.get("prompt")))
        if body.get("stream"):
            return await self._stream(request, body, fault, reply, prompt, chat=False)
        completion = count_tokens(reply.text)
        self.bill(prompt, completion)
        return web.json_response(
            {
                **_envelope(body, "text_completion"),
                "choices": [{"index": 0, "text": reply.text, "logprobs": None, "finish_reason": "stop"}],
                "usage": _usage(prompt, completion),
            }
        )

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        body, fault = await self.receive(request)
        refusal = self._refuse(request, body, fault)
        if refusal is not None:
            return refusal
        await self.pause(fault)
        inputs = body.get("input")
        items = inputs if isinstance(inputs, list) else [inputs]
        dims = int(body.get("dimensions") or self.embedding_dims)
        prompt = sum(count_tokens(t) for t in texts_in(items)) or len(items)
        self.bill(prompt, 0)
        data = []
        for i, item in enumerate(items):
            vector = _vector(orjson.dumps(item), dims)
            encoded: Any = vector
            if body.get("encoding_format") == "base64":
                encoded = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
            data.append({"object": "embedding", "index": i, "embedding": encoded})
        return web.json_response(
            {
                "object": "list",
                "data": data,
                "model": body.get("model"),
                "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
            }
        )

    async def _models(self, request: web.Request) -> web.StreamResponse:
        _, fault = await self.receive(request)
        refusal = self._refuse(request, {}, fault)
        if refusal is not None:
            return refusal
        data = [{"id": m, "object": "model", "created": 1700000000, "owned_by": "fake"} for m in self.models]
        return web.json_response({"object": "list", "data": data})

    # -- streaming -------------------------------------------------------------

    async def _stream(
        self, request: web.Request, body: dict[str, Any], fault: Fault, reply: Reply, prompt: int, *, chat: bool
    ) -> web.StreamResponse:
        completion = _completion_tokens(reply) if chat else count_tokens(reply.text)
        self.bill(prompt, completion)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        envelope = _envelope(body, "chat.completion.chunk" if chat else "text_completion")
        frames = self._frames(envelope, reply, prompt, completion, fault, include_usage, chat=chat)
        error = {"error": {"message": "The server had an error while processing your request.", "type": "server_error"}}
        hang = {**envelope, "choices": [_choice({"content": "more "}, None, chat)]}
        return await self.run_stream(
            request,
            fault,
            ((None, orjson.dumps(f).decode() if isinstance(f, dict) else f) for f in frames),
            error_frame=(None, orjson.dumps(error).decode()),
            hang_frame=(None, orjson.dumps(hang).decode()),
        )

    def _frames(
        self,
        envelope: dict[str, Any],
        reply: Reply,
        prompt: int,
        completion: int,
        fault: Fault,
        include_usage: bool,
        *,
        chat: bool,
    ) -> Iterator[dict[str, Any] | str]:
        # OpenAI puts "usage": null on every chunk once include_usage is on.
        null_usage = {"usage": None} if include_usage and self.flavor == "openai" else {}
        usage = None if fault.no_usage else _usage(prompt, completion)
        if chat:
            yield {**envelope, "choices": [_choice({"role": "assistant", "content": ""}, None, chat)], **null_usage}
        for piece in pieces(reply.thinking) if chat else ():
            # How OpenAI-compatible reasoning servers stream their reasoning, before the answer.
            yield {**envelope, "choices": [_choice({"reasoning_content": piece}, None, chat)], **null_usage}
        for piece in pieces(reply.text):
            yield {**envelope, "choices": [_choice({"content": piece}, None, chat)], **null_usage}
        for i, (name, args) in enumerate(reply.tool_calls):
            first = {"index": i, "id": f"call_{i}", "type": "function", "function": {"name": name, "arguments": ""}}
            yield {**envelope, "choices": [_choice({"tool_calls": [first]}, None, chat)], **null_usage}
            for part in json_pieces(orjson.dumps(args).decode()):
                delta = {"tool_calls": [{"index": i, "function": {"arguments": part}}]}
                yield {**envelope, "choices": [_choice(delta, None, chat)], **null_usage}
        finish = _choice({}, "tool_calls" if reply.tool_calls else "stop", chat)
        last: dict[str, Any] = {**envelope, "choices": [finish], **null_usage}
        if self.flavor == "mistral" and usage:
            last["usage"] = usage
        if self.flavor == "groq" and usage:
            last["x_groq"] = {"id": "req_fake", "usage": usage}
        yield last
        if self.flavor == "openai" and include_usage and usage:
            yield {**envelope, "choices": [], "usage": usage}
        yield "[DONE]"

    # -- request checks ----------------------------------------------------------

    def _refuse(self, request: web.Request, body: Any, fault: Fault) -> web.Response | None:
        """Fault status, auth and flavor-specific validation, in that order."""
        if fault.status is not None:
            error = {"message": fault.message, "type": _error_type(fault.status), "param": None, "code": fault.code}
            return json_error(fault.status, {"error": error}, fault.retry_after)
        auth = request.headers.get("Authorization", "")
        key = auth.removeprefix("Bearer ").strip()
        if self.valid_keys is not None and key not in self.valid_keys:
            masked = f"{key[:3]}***{key[-4:]}" if key else "(none)"
            error = {
                "message": f"Incorrect API key provided: {masked}.",
                "type": "invalid_request_error",
                "param": None,
                "code": "invalid_api_key",
            }
            return json_error(401, {"error": error})
        if not isinstance(body, dict):
            return json_error(400, {"error": {"message": "We could not parse the JSON body.", "type": "invalid_request_error"}})
        if self.flavor == "mistral":
            extra = [name for name in _MISTRAL_FORBIDDEN if name in body]
            if extra:
                detail = [{"type": "extra_forbidden", "loc": ["body", n], "msg": "Extra inputs are not permitted"} for n in extra]
                return json_error(422, {"object": "error", "message": {"detail": detail}, "type": "invalid_request_message_error"})
        if self.flavor == "groq":
            bad = [n for n in _GROQ_FORBIDDEN if n in body]
            if body.get("n") not in (None, 1):
                bad.append("n")
            if any(isinstance(m, dict) and "name" in m for m in body.get("messages") or []):
                bad.append("messages[].name")
            if bad:
                message = f"property '{bad[0]}' is unsupported"
                return json_error(400, {"error": {"message": message, "type": "invalid_request_error"}})
        return None


def _envelope(body: dict[str, Any], obj: str) -> dict[str, Any]:
    return {"id": "chatcmpl-fake", "object": obj, "created": int(time.time()), "model": body.get("model")}


def _choice(delta: dict[str, Any], finish: str | None, chat: bool) -> dict[str, Any]:
    if chat:
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    return {"index": 0, "text": delta.get("content", ""), "logprobs": None, "finish_reason": finish}


def _tool_call(i: int, name: str, args: dict[str, Any]) -> dict[str, Any]:
    return {"id": f"call_{i}", "type": "function", "function": {"name": name, "arguments": orjson.dumps(args).decode()}}


def _completion_tokens(reply: Reply) -> int:
    return count_tokens(reply.text) + sum(len(json_pieces(orjson.dumps(a).decode())) for _, a in reply.tool_calls)


def _usage(prompt: int, completion: int) -> dict[str, Any]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _vector(seed: bytes, dims: int) -> list[float]:
    digest = hashlib.sha256(seed).digest()
    return [round((digest[i % len(digest)] - 128) / 128, 6) for i in range(dims)]


def _error_type(status: int) -> str:
    if status == 429:
        return "requests"  # OpenAI's error.type for rate limits
    return "server_error" if status >= 500 else "invalid_request_error"
