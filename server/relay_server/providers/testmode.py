"""The test-mode backend: deterministic mocked answers for ``rly_test_sk_`` keys.

Nothing leaves the process.  An answer is a pure function of the request: its
seed is the sha256 of the canonical JSON of the request body minus the fields
that cannot change an answer (``stream``, ``stream_options``, ``user``,
``metadata``, ...) and minus the fields applied afterwards as deterministic
post-processing (``n``, ``stop``, ``max_tokens``/``max_completion_tokens``,
``echo``, ``suffix``).  So raising ``max_tokens`` extends the same answer, and
choice 0 of an ``n=3`` request equals the answer of the ``n=1`` request.  Each
further choice is redrawn (deterministically) while it equals an earlier one.

Token counts come from ``pipeline.tokens``; generated text is tokenized with the
model's base encoding, so ``max_tokens`` cuts exactly that many tokens.  Legacy
completions default to ``max_tokens=16`` as OpenAI's do.  ``logprobs`` (chat:
``logprobs: true`` + ``top_logprobs``; legacy: ``logprobs: N``) is answered with
deterministic, well-formed values (``testmode_logprobs``), streamed or not.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from relay_server.domain.provider import ProviderCall
from relay_server.errors import ErrorKind, RelayError
from relay_server.providers import testmode_library as library
from relay_server.providers import testmode_logprobs as lp
from relay_server.text import tokens

_NOT_IN_SEED = frozenset({
    "stream", "stream_options", "user", "metadata", "store", "service_tier", "prompt_cache_key",
    "safety_identifier", "logprobs", "top_logprobs", "parallel_tool_calls",
    "n", "stop", "max_tokens", "max_completion_tokens", "echo", "suffix",
})
_FINGERPRINT = "fp_relay_test"
_MAX_N = 128
_DISTINCT_TRIES = 8
_COMPLETION_DEFAULT_MAX_TOKENS = 16
_MAX_EMBEDDING_DIMS = 3072
_MAX_EMBEDDING_ITEMS = 2048
_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


@dataclass(slots=True)
class _Choice:
    index: int
    finish_reason: str
    completion_tokens: int
    text: str | None = None
    pieces: list[str] = field(default_factory=list)
    """Generated text (or tool arguments) split into stream deltas of a few tokens."""
    tool_calls: list[dict[str, Any]] | None = None
    prefix: str = ""
    """Echoed prompt (legacy completions): part of ``text``, not of the token count."""
    groups: list[list[str]] = field(default_factory=list)
    """The tokens of each delta of ``pieces`` (for logprobs)."""
    seed: int = 0
    reasoning: list[str] = field(default_factory=list)
    """Reasoning deltas (``reasoning_content``), when the request asked for reasoning."""
    reasoning_tokens: int = 0


@dataclass(slots=True)
class _Answer:
    choices: list[_Choice]
    prompt_tokens: int
    id: str
    model: str
    created: int = field(default_factory=lambda: int(time.time()))
    top_logprobs: int | None = None
    """None: no logprobs asked for; else how many alternatives per token."""

    def usage(self, detailed: bool) -> dict[str, Any]:
        completion = sum(c.completion_tokens + c.reasoning_tokens for c in self.choices)
        usage: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        }
        if detailed:  # chat completions carry the breakdowns, legacy completions do not
            usage["prompt_tokens_details"] = {"cached_tokens": 0, "audio_tokens": 0}
            usage["completion_tokens_details"] = {
                "reasoning_tokens": sum(c.reasoning_tokens for c in self.choices), "audio_tokens": 0,
                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0,
            }
        return usage


@dataclass(frozen=True, slots=True)
class _Limits:
    """How generated text is finished: tokenizer model, stop sequences, token cap."""

    model: str
    stops: Sequence[str]
    max_tokens: int | None

    def finish(self, text: str, rng: random.Random) -> tuple[str, list[list[str]], int, str]:
        """Cut at the first stop sequence, then at the token cap: (text, deltas as token groups, tokens, finish_reason)."""
        finish = "stop"
        cut = min((i for i in (text.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            text = text[:cut]
        ids = tokens.encode(text, self.model)
        if self.max_tokens is not None and len(ids) > self.max_tokens:
            ids, finish = ids[: self.max_tokens], "length"
            text = tokens.decode(ids, self.model)
        return text, _deltas(ids, self.model, rng), len(ids), finish


class TestModeProvider:
    """In-process Provider returning deterministic answers; never touches the network."""

    __test__ = False  # not a pytest test class despite the name
    name = "test"

    def __init__(self, chunk_delay_s: float = 0.0) -> None:
        self._chunk_delay_s = chunk_delay_s

    async def complete(self, call: ProviderCall) -> dict[str, Any]:
        if call.kind == "chat":
            return _chat_body(_chat_answer(call))
        if call.kind == "completion":
            return _completion_body(_completion_answer(call))
        raise RelayError(ErrorKind.INTERNAL, f"test mode cannot complete a {call.kind!r} request")

    async def stream(self, call: ProviderCall) -> AsyncIterator[dict[str, Any]]:
        if call.kind == "chat":
            chunks = _chat_chunks(_chat_answer(call))
        elif call.kind == "completion":
            chunks = _completion_chunks(_completion_answer(call))
        else:
            raise RelayError(ErrorKind.INTERNAL, f"test mode cannot stream a {call.kind!r} request")
        for i, chunk in enumerate(chunks):
            if i:
                # Yield to the loop between chunks so a client's cancellation lands mid-stream.
                await asyncio.sleep(self._chunk_delay_s)
            yield chunk

    async def embed(self, call: ProviderCall) -> dict[str, Any]:
        if call.kind != "embedding":
            raise RelayError(ErrorKind.INTERNAL, f"test mode cannot embed a {call.kind!r} request")
        return _embedding_body(call)


# --- shared helpers ------------------------------------------------------------


def _invalid(param: str, message: str) -> RelayError:
    return RelayError(ErrorKind.INVALID_REQUEST, message, param=param)


def _seed(body: Mapping[str, Any], *extra: Any) -> int:
    kept = {k: v for k, v in body.items() if k not in _NOT_IN_SEED}
    canonical = json.dumps([kept, *extra], sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return int.from_bytes(hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).digest()[:8], "big")


def _choice_rng(seed: int, index: int) -> random.Random:
    # random.Random hashes a str seed with SHA-512: stable across runs, hash seeds and versions.
    return random.Random(f"{seed}:{index}")


def _int_param(body: Mapping[str, Any], key: str, default: int | None, low: int, high: int | None = None) -> int | None:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON numbers may arrive as floats through protobuf Values
    if not isinstance(value, int) or isinstance(value, bool) or value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise _invalid(key, f"'{key}' must be an integer {bound}")
    return value


def _stop_sequences(body: Mapping[str, Any]) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    if isinstance(stop, str):
        return [stop] if stop else []
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return [s for s in stop if s]
    raise _invalid("stop", "'stop' must be a string or a list of strings")


def _model(call: ProviderCall) -> tuple[str, str]:
    """(model echoed to the client, model whose tokenizer counts the tokens)."""
    requested = call.body.get("model")
    shown = requested if isinstance(requested, str) and requested else call.provider_model
    return shown, call.provider_model or shown


def _response_id(prefix: str, request_id: str, seed: int) -> str:
    cleaned = "".join(c for c in request_id if c.isalnum() or c in "-_")[:64]
    return f"{prefix}-{cleaned or format(seed, '016x')}"


def _deltas(ids: list[int], model: str, rng: random.Random) -> list[list[str]]:
    """Stream deltas of one to four tokens each, as real streams send them (each as its tokens)."""
    pieces, out, i = tokens.decode_pieces(ids, model), [], 0
    while i < len(pieces):
        size = rng.randint(1, 4)
        out.append(pieces[i : i + size])
        i += size
    return out


def _text_choice(
    index: int, generate: Callable[[], str], limits: _Limits, seen: set[str], rng: random.Random, prefix: str = ""
) -> _Choice:
    """Draws until the finished text differs from earlier choices' (bounded: tiny caps must repeat)."""
    for _ in range(_DISTINCT_TRIES):
        text, groups, used, finish = limits.finish(generate(), rng)
        if text not in seen:
            break
    seen.add(text)
    return _Choice(index, finish, used, text=prefix + text, pieces=["".join(g) for g in groups], prefix=prefix, groups=groups)


# --- chat ----------------------------------------------------------------------


def _chat_answer(call: ProviderCall) -> _Answer:
    body = call.body
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _invalid("messages", "'messages' must be a non-empty list")
    shown, model = _model(call)
    n = _int_param(body, "n", 1, 1, _MAX_N) or 1
    max_tokens = _int_param(body, "max_completion_tokens", None, 1)
    if max_tokens is None:
        max_tokens = _int_param(body, "max_tokens", None, 1)
    limits = _Limits(model, _stop_sequences(body), max_tokens)
    tools = _function_tools(body.get("tools"))
    forced = _forced_tool(body.get("tool_choice"), tools, messages)
    seed = _seed(body)
    seen: set[str] = set()
    choices: list[_Choice] = []
    for index in range(n):
        rng = _choice_rng(seed, index)
        if forced is not None:
            choices.append(_tool_choice(index, rng, forced, tools, model))
        else:
            generate = lambda: library.chat_text(body.get("response_format"), rng)  # noqa: E731, B023 - used in this iteration
            choices.append(_text_choice(index, generate, limits, seen, rng))
        choices[-1].seed = seed
    if body.get("reasoning_effort") is not None:
        for choice in choices:
            # Its own stream of draws (seeded apart from the answer's), so the answer is unchanged.
            _add_reasoning(choice, random.Random(f"{seed}:reasoning:{choice.index}"), model)
    raw_tools = body.get("tools") if isinstance(body.get("tools"), list) else None
    prompt_tokens = tokens.count_chat_prompt(messages, model, raw_tools)
    answer = _Answer(choices, prompt_tokens, _response_id("chatcmpl", call.request_id, seed), shown)
    answer.top_logprobs = lp.chat_wanted(body)
    return answer


def _add_reasoning(choice: _Choice, rng: random.Random, model: str) -> None:
    """Reasoning asked (``reasoning_effort``; the Anthropic door's ``thinking``): a deterministic
    reasoning text streamed before the answer, counted as reasoning tokens."""
    ids = tokens.encode(library.compose_text(rng), model)
    choice.reasoning = ["".join(group) for group in _deltas(ids, model, rng)]
    choice.reasoning_tokens = len(ids)


def _function_tools(tools: Any) -> dict[str, Mapping[str, Any]]:
    """Function name → definition, for well-formed function tools only."""
    found: dict[str, Mapping[str, Any]] = {}
    for tool in tools if isinstance(tools, list) else ():
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            found.setdefault(function["name"], function)
    return found


def _forced_tool(choice: Any, tools: Mapping[str, Any], messages: list[Any]) -> str | None:
    """A function name to call, "" to call one the model picks, None to answer in text."""
    if isinstance(choice, Mapping) and choice.get("type") == "function":
        function = choice.get("function")
        name = function.get("name") if isinstance(function, Mapping) else None
        if not isinstance(name, str) or name not in tools:
            raise _invalid("tool_choice", f"tool_choice names a function that is not in tools: {name!r}")
        return name
    if not tools or choice == "none":
        return None
    if choice == "required":
        return ""
    # "auto": call a tool in reply to the user, answer in text after a tool result.
    last = messages[-1]
    return "" if isinstance(last, Mapping) and last.get("role") == "user" else None


def _tool_choice(index: int, rng: random.Random, forced: str, tools: Mapping[str, Any], model: str) -> _Choice:
    name = forced or rng.choice(sorted(tools))
    arguments = library.tool_arguments(tools[name].get("parameters"), rng)
    call_id = "call_" + "".join(rng.choice(_ID_ALPHABET) for _ in range(24))
    tool_call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
    ids = tokens.encode(arguments, model)
    used = len(ids) + len(tokens.encode(name, model))
    return _Choice(index, "tool_calls", used, pieces=["".join(g) for g in _deltas(ids, model, rng)], tool_calls=[tool_call])


def _chat_body(answer: _Answer) -> dict[str, Any]:
    choices = []
    for c in answer.choices:
        message: dict[str, Any] = {"role": "assistant", "content": c.text, "refusal": None, "annotations": []}
        if c.reasoning:
            message["reasoning_content"] = "".join(c.reasoning)
        if c.tool_calls:
            message["tool_calls"] = c.tool_calls
        choices.append({"index": c.index, "message": message, "logprobs": _chat_logprobs(answer, c), "finish_reason": c.finish_reason})
    return {
        "id": answer.id, "object": "chat.completion", "created": answer.created, "model": answer.model,
        "choices": choices, "usage": answer.usage(detailed=True),
        "service_tier": "default", "system_fingerprint": _FINGERPRINT,
    }


def _chat_logprobs(answer: _Answer, c: _Choice, group: int | None = None) -> dict[str, Any] | None:
    """The choice's logprobs (``group``: only that delta's tokens), None unless asked for."""
    if answer.top_logprobs is None:
        return None
    if c.tool_calls:
        return lp.chat_logprobs(None)  # OpenAI gives logprobs of message content only
    groups = c.groups if group is None else c.groups[group : group + 1]
    start = sum(len(g) for g in c.groups[:group]) if group else 0
    flat = [t for g in groups for t in g]
    return lp.chat_logprobs(lp.chat_content(c.seed, c.index, flat, start, answer.top_logprobs))


def _chat_chunks(answer: _Answer) -> list[dict[str, Any]]:
    head = {
        "id": answer.id, "object": "chat.completion.chunk", "created": answer.created, "model": answer.model,
        "service_tier": "default", "system_fingerprint": _FINGERPRINT,
    }

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None, logprobs: Any = None) -> dict[str, Any]:
        return {**head, "choices": [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}]}

    out = []
    for c in answer.choices:
        # content stays null for a tool-call answer, as in the non-streaming message.
        out.append(chunk(c.index, {"role": "assistant", "content": None if c.tool_calls else "", "refusal": None}))
        out.extend(chunk(c.index, {"reasoning_content": p}) for p in c.reasoning)
        for k, call in enumerate(c.tool_calls or ()):
            opening = {"index": k, **call, "function": {"name": call["function"]["name"], "arguments": ""}}
            out.append(chunk(c.index, {"tool_calls": [opening]}))
            out.extend(chunk(c.index, {"tool_calls": [{"index": k, "function": {"arguments": p}}]}) for p in c.pieces)
        if not c.tool_calls:
            out.extend(chunk(c.index, {"content": p}, logprobs=_chat_logprobs(answer, c, k)) for k, p in enumerate(c.pieces))
        out.append(chunk(c.index, {}, c.finish_reason))
    out.append({**head, "choices": [], "usage": answer.usage(detailed=True)})
    return out


# --- legacy completions --------------------------------------------------------


def _prompts(prompt: Any) -> list[str | list[int]]:
    if prompt is None:
        return [""]  # OpenAI completes from the start of a document
    items = library.input_items(prompt, allow_empty=True)
    if items is None:
        raise _invalid("prompt", "'prompt' must be a string, list of strings, token array or list of token arrays")
    return items


def _completion_answer(call: ProviderCall) -> _Answer:
    body = call.body
    prompts = _prompts(body.get("prompt"))
    shown, model = _model(call)
    n = _int_param(body, "n", 1, 1, _MAX_N) or 1
    limits = _Limits(model, _stop_sequences(body), _int_param(body, "max_tokens", _COMPLETION_DEFAULT_MAX_TOKENS, 0))
    echo = body.get("echo") is True
    base = {k: v for k, v in body.items() if k != "prompt"}
    choices: list[_Choice] = []
    for p_index, prompt in enumerate(prompts):
        seed, seen = _seed(base, prompt), set[str]()
        prefix = (prompt if isinstance(prompt, str) else tokens.decode(prompt, model)) if echo else ""
        for j in range(n):
            rng = _choice_rng(seed, j)
            # Instruct models usually open a completion with a blank line.
            generate = lambda: "\n\n" + library.compose_text(rng)  # noqa: E731, B023 - used in this iteration
            choices.append(_text_choice(p_index * n + j, generate, limits, seen, rng, prefix))
            choices[-1].seed = seed
            if prefix:  # the echoed prompt's tokens come first in logprobs
                choices[-1].groups.insert(0, tokens.decode_pieces(tokens.encode(prefix, model), model))
    prompt_tokens = tokens.count_prompt(body.get("prompt"), model)
    answer = _Answer(choices, prompt_tokens, _response_id("cmpl", call.request_id, _seed(base, prompts)), shown)
    answer.top_logprobs = lp.completion_wanted(body)
    return answer


def _completion_body(answer: _Answer) -> dict[str, Any]:
    return {
        "id": answer.id, "object": "text_completion", "created": answer.created, "model": answer.model,
        "system_fingerprint": _FINGERPRINT,
        "choices": [
            {"text": c.text, "index": c.index, "logprobs": _completion_logprobs(answer, c), "finish_reason": c.finish_reason}
            for c in answer.choices
        ],
        "usage": answer.usage(detailed=False),
    }


def _completion_logprobs(answer: _Answer, c: _Choice, group: int | None = None) -> dict[str, Any] | None:
    """Legacy logprobs of the choice (``group``: of that chunk's tokens only), None unless asked for."""
    if answer.top_logprobs is None:
        return None
    groups = c.groups if group is None else c.groups[group : group + 1]
    before = c.groups[:group] if group else []
    start, offset = sum(len(g) for g in before), sum(len(t) for g in before for t in g)
    flat = [t for g in groups for t in g]
    first_is_prompt = bool(c.prefix) and start == 0
    return lp.completion_logprobs(c.seed, c.index, flat, start, offset, answer.top_logprobs, first_is_prompt=first_is_prompt)


def _completion_chunks(answer: _Answer) -> list[dict[str, Any]]:
    head = {
        "id": answer.id, "object": "text_completion", "created": answer.created, "model": answer.model,
        "system_fingerprint": _FINGERPRINT,
    }

    def chunk(index: int, text: str, finish: str | None = None, logprobs: Any = None) -> dict[str, Any]:
        return {**head, "choices": [{"text": text, "index": index, "logprobs": logprobs, "finish_reason": finish}]}

    out: list[dict[str, Any]] = []
    for c in answer.choices:
        texts = ([c.prefix] if c.prefix else []) + c.pieces  # one chunk per group of c.groups
        out.extend(chunk(c.index, p, logprobs=_completion_logprobs(answer, c, k)) for k, p in enumerate(texts))
        out.append(chunk(c.index, "", c.finish_reason))
    out.append({**head, "choices": [], "usage": answer.usage(detailed=False)})
    return out


# --- embeddings ----------------------------------------------------------------


def _embedding_body(call: ProviderCall) -> dict[str, Any]:
    body = call.body
    items = library.input_items(body.get("input"), allow_empty=False)
    if items is None:
        raise _invalid("input", "'input' must be a non-empty string, list of non-empty strings or token arrays")
    if len(items) > _MAX_EMBEDDING_ITEMS:
        raise _invalid("input", f"'input' may hold at most {_MAX_EMBEDDING_ITEMS} items")
    shown, model = _model(call)
    default_dims = _MAX_EMBEDDING_DIMS if "text-embedding-3-large" in f"{shown} {model}" else 1536
    dims = _int_param(body, "dimensions", default_dims, 1, _MAX_EMBEDDING_DIMS) or default_dims
    encoding_format = body.get("encoding_format") or "float"
    if encoding_format not in ("float", "base64"):
        raise _invalid("encoding_format", "'encoding_format' must be 'float' or 'base64'")
    data = library.embeddings(items, shown, dims, encoding_format)
    prompt_tokens = tokens.count_embedding_input(body.get("input"), model)
    return {
        "object": "list", "data": data, "model": shown,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }
