"""The small tables both directions of the Anthropic ↔ OpenAI pair share: stop reason ↔
finish reason, usage in either shape, and Anthropic's error types with their statuses.

Usage conventions: Anthropic counts cache reads and cache writes apart from ``input_tokens``;
OpenAI's ``prompt_tokens`` (and Relay's ``Usage.prompt_tokens``) include everything read as
input, with the cached part in ``prompt_tokens_details.cached_tokens``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from relay_server.domain.provider import Usage
from relay_server.providers.translator import ProviderFailure, classify_http_error

FINISH_REASONS: dict[str | None, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# Anthropic's error types and the HTTP status each one comes with, so an error
# event inside a stream is classified exactly like the same error as a response.
ERROR_STATUS: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}


def finish_reason(stop_reason: str | None) -> str:
    return FINISH_REASONS.get(stop_reason, "stop")


def openai_usage(usage: Mapping[str, Any]) -> dict[str, Any]:
    """Anthropic counts cache reads and writes apart from ``input_tokens``;
    OpenAI's ``prompt_tokens`` includes everything that was read as input."""
    fresh = int(usage.get("input_tokens") or 0)
    cache_read = int(usage.get("cache_read_input_tokens") or 0)
    cache_write = int(usage.get("cache_creation_input_tokens") or 0)
    completion = int(usage.get("output_tokens") or 0)
    prompt = fresh + cache_read + cache_write
    result: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cache_read},
    }
    if cache_write:
        # Not an OpenAI field: Usage.from_openai reads it to price cache writes.
        result["cache_creation_input_tokens"] = cache_write
    return result


def error_from_object(error: Any) -> ProviderFailure:
    """An Anthropic ``{"type": ..., "message": ...}`` error object."""
    kind = error.get("type") if isinstance(error, Mapping) else None
    message = error.get("message") if isinstance(error, Mapping) else None
    status = ERROR_STATUS.get(kind or "", 500)
    return classify_http_error(
        status,
        message=str(message or ""),
        code=kind,
        param=None,
        headers={},
    )


# OpenAI finish_reason -> Anthropic stop_reason (the reverse of FINISH_REASONS; "stop" could be
# end_turn or stop_sequence: OpenAI does not say which, end_turn is the usual one).
STOP_REASONS: dict[str | None, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def stop_reason(finish: str | None) -> str:
    return STOP_REASONS.get(finish, "end_turn")


def usage_from_anthropic(usage: Mapping[str, Any]) -> Usage:
    """Anthropic's usage (merged from ``message_start`` and ``message_delta``) as Relay's ``Usage``."""
    fresh = int(usage.get("input_tokens") or 0)
    cache_read = int(usage.get("cache_read_input_tokens") or 0)
    cache_write = int(usage.get("cache_creation_input_tokens") or 0)
    return Usage(
        prompt_tokens=fresh + cache_read + cache_write,
        completion_tokens=int(usage.get("output_tokens") or 0),
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
    )


def anthropic_usage(usage: Usage | None, *, estimated_input: int = 0) -> dict[str, int]:
    """Relay's ``Usage`` in Anthropic's shape (input without the cached parts)."""
    if usage is None:
        return {"input_tokens": estimated_input, "output_tokens": 0,
                "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    fresh = max(0, usage.prompt_tokens - usage.cache_read_tokens - usage.cache_write_tokens)
    return {
        "input_tokens": fresh,
        "output_tokens": usage.completion_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cache_read_tokens,
    }
