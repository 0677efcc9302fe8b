"""Relay SDK: a typed gRPC client for the Relay LLM gateway.

    from relay_sdk import Relay

    with Relay("127.0.0.1:50051", api_key="rly_...") as client:
        reply = client.chat("gpt-4o-mini", [{"role": "user", "content": "Hello"}])

The message classes are generated from the protos into the ``relay-proto`` package
(``relay_proto``), which the server uses too; the most used ones are re-exported here.
"""

from __future__ import annotations

from relay_proto.relay.v1.chat_pb2 import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
)
from relay_proto.relay.v1.completions_pb2 import Completion, CompletionRequest
from relay_proto.relay.v1.embeddings_pb2 import EmbeddingList, EmbeddingRequest
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
from relay_sdk._retry import RetryPolicy
from relay_sdk._streams import AsyncResponseStream, ResponseStream

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
