"""Relay SDK: a typed gRPC client for the Relay LLM gateway.

    from relay_sdk import Relay

    with Relay("127.0.0.1:50051", api_key="rly_...") as client:
        reply = client.chat("gpt-4o-mini", [{"role": "user", "content": "Hello"}])

The message classes are generated from the protos into ``relay_sdk._proto``;
the most used ones are re-exported here.

The names load lazily: the server imports ``relay_sdk._proto`` for the message
classes and must not pay for (or depend on) the client facade.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the same names, eagerly, for type checkers and editors
    from relay_sdk._client import AsyncRelay, Relay
    from relay_sdk._errors import (
        AuthenticationError,
        BadRequestError,
        ConflictError,
        InternalServerError,
        ModelNotFoundError,
        NoProviderAvailableError,
        NotFoundError,
        PaymentRequiredError,
        PermissionDeniedError,
        ProviderError,
        QuotaExceededError,
        RateLimitError,
        RelayError,
        RequestTimeoutError,
        RequestTooLargeError,
        ServiceUnavailableError,
        SpendCapExceededError,
        TenantProvisioningError,
        TenantSuspendedError,
        UnimplementedError,
        UnprocessableEntityError,
        from_rpc_error,
    )
    from relay_sdk._pagers import AsyncPager, Pager
    from relay_sdk._proto.relay.v1.chat_pb2 import (
        ChatCompletion,
        ChatCompletionChunk,
        ChatCompletionRequest,
        ChatMessage,
    )
    from relay_sdk._proto.relay.v1.completions_pb2 import Completion, CompletionRequest
    from relay_sdk._proto.relay.v1.embeddings_pb2 import EmbeddingList, EmbeddingRequest
    from relay_sdk._retry import RetryPolicy
    from relay_sdk._streams import AsyncResponseStream, ResponseStream

_SOURCES = {
    "_client": ("AsyncRelay", "Relay"),
    "_errors": (
        "AuthenticationError", "BadRequestError", "ConflictError", "InternalServerError", "ModelNotFoundError",
        "NoProviderAvailableError", "NotFoundError", "PaymentRequiredError", "PermissionDeniedError", "ProviderError",
        "QuotaExceededError", "RateLimitError", "RelayError", "RequestTimeoutError", "RequestTooLargeError",
        "ServiceUnavailableError", "SpendCapExceededError", "TenantProvisioningError", "TenantSuspendedError",
        "UnimplementedError", "UnprocessableEntityError", "from_rpc_error",
    ),
    "_pagers": ("AsyncPager", "Pager"),
    "_proto.relay.v1.chat_pb2": ("ChatCompletion", "ChatCompletionChunk", "ChatCompletionRequest", "ChatMessage"),
    "_proto.relay.v1.completions_pb2": ("Completion", "CompletionRequest"),
    "_proto.relay.v1.embeddings_pb2": ("EmbeddingList", "EmbeddingRequest"),
    "_retry": ("RetryPolicy",),
    "_streams": ("AsyncResponseStream", "ResponseStream"),
}
_WHERE = {name: module for module, names in _SOURCES.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'relay_sdk' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"relay_sdk.{module}"), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])


__version__ = "0.1.0"

__all__ = [
    "AsyncPager",
    "AsyncRelay",
    "AsyncResponseStream",
    "AuthenticationError",
    "BadRequestError",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionRequest",
    "ChatMessage",
    "Completion",
    "CompletionRequest",
    "ConflictError",
    "EmbeddingList",
    "EmbeddingRequest",
    "InternalServerError",
    "ModelNotFoundError",
    "NoProviderAvailableError",
    "NotFoundError",
    "Pager",
    "PaymentRequiredError",
    "PermissionDeniedError",
    "ProviderError",
    "QuotaExceededError",
    "RateLimitError",
    "Relay",
    "RelayError",
    "RequestTimeoutError",
    "RequestTooLargeError",
    "ResponseStream",
    "RetryPolicy",
    "ServiceUnavailableError",
    "SpendCapExceededError",
    "TenantProvisioningError",
    "TenantSuspendedError",
    "UnimplementedError",
    "UnprocessableEntityError",
    "from_rpc_error",
]
