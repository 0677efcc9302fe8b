"""What makes two requests "the same" for the response cache.

Pure functions, no I/O.  The exact key is the sha256 of the canonical request:
the tenant and environment (a key is never shared across tenants, and test
traffic never answers live traffic), the request kind, the catalog model the
request resolved to, and every field of the body that can change the answer —
messages and all generation parameters, unknown ones included.  Fields that
only change how the answer is delivered or logged (``stream``,
``stream_options``, ``user``, ``metadata``, ...) are left out, so a streamed
request and a plain one share an entry.

Canonical JSON: sorted keys, no whitespace, UTF-8, and integral floats written
as integers — ``"temperature": 0`` from the REST facade and ``0.0`` from the
typed gRPC API are one request.
"""

from __future__ import annotations

import hashlib
import math
import unicodedata
from collections.abc import Mapping
from typing import Any

import orjson

from relay_server.domain.provider import RequestKind

KEY_VERSION = "v1"

NOT_IN_KEY = frozenset({
    "model",  # replaced by the resolved catalog model (aliases share entries)
    "stream", "stream_options", "user", "metadata", "store", "service_tier",
    "prompt_cache_key", "safety_identifier",
})

CACHEABLE_KINDS: frozenset[RequestKind] = frozenset({"chat", "completion"})

# OpenAI's default temperature: a request that names none samples.
DEFAULT_TEMPERATURE = 1.0


def _canonical(value: Any) -> Any:
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def canonical_json(value: Any) -> bytes:
    return orjson.dumps(_canonical(value), option=orjson.OPT_SORT_KEYS)


def _digest(*parts: Any) -> str:
    return hashlib.sha256(canonical_json(list(parts))).hexdigest()


def generation_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a request body that can change its answer."""
    return {k: v for k, v in body.items() if k not in NOT_IN_KEY}


def exact_key(tenant_id: str, environment: str, kind: RequestKind, model_id: str, body: Mapping[str, Any]) -> str:
    """The exact-match cache key (hex sha256)."""
    return _digest(KEY_VERSION, tenant_id, environment, kind, model_id, generation_fields(body))


def is_deterministic(body: Mapping[str, Any]) -> bool:
    """False for requests whose answer is meant to vary or to act.

    Sampling (temperature > 0, OpenAI's default being 1) without a ``seed``,
    and any request offering tools (a tool call may have side effects the
    caller expects to happen again).
    """
    if body.get("tools") or body.get("functions"):
        return False
    temperature = body.get("temperature")
    if temperature is None:
        temperature = DEFAULT_TEMPERATURE
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool):
        return False
    if temperature <= 0:
        return True
    seed = body.get("seed")
    return isinstance(seed, (int, float)) and not isinstance(seed, bool)


# --- semantic cache -------------------------------------------------------------


def _message_text(content: Any) -> str | None:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [part.get("text") for part in content if isinstance(part, Mapping) and part.get("type") == "text"]
        strings = [t for t in texts if isinstance(t, str)]
        if strings and len(strings) == len(content):
            return "\n".join(strings)
    return None  # images or other parts: not something a text embedding can stand for


def last_user_text(kind: RequestKind, body: Mapping[str, Any]) -> tuple[str, int] | None:
    """(text, position) of what the semantic cache embeds: the last user message
    of a chat, or the prompt of a legacy completion.  None when there is no
    plain-text prompt to compare (images, token arrays, several prompts)."""
    if kind == "completion":
        prompt = body.get("prompt")
        return (prompt, -1) if isinstance(prompt, str) and prompt.strip() else None
    messages = body.get("messages")
    if not isinstance(messages, list):
        return None
    for position in range(len(messages) - 1, -1, -1):
        message = messages[position]
        if isinstance(message, Mapping) and message.get("role") == "user":
            text = _message_text(message.get("content"))
            return (text, position) if text and text.strip() else None
    return None


def normalise_prompt(text: str) -> str:
    """The text the semantic cache embeds: NFKC, case-folded, whitespace collapsed.

    So "What is  Relay?" and "what is relay?" embed identically whatever the
    embedding model (test mode's vectors are a hash of the text).
    """
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def semantic_scope(
    tenant_id: str, environment: str, kind: RequestKind, model_id: str, body: Mapping[str, Any], position: int
) -> str:
    """Everything but the embedded prompt: semantic matches only happen between
    requests that agree on model, system prompt, earlier turns and parameters."""
    fields = generation_fields(body)
    if kind == "completion":
        fields.pop("prompt", None)
    else:
        messages = list(fields.get("messages") or [])
        messages[position] = {"role": "user", "content": None}
        fields["messages"] = messages
    return _digest(KEY_VERSION, "semantic", tenant_id, environment, kind, model_id, fields)
