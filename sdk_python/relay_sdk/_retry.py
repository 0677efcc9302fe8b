"""When and how long to wait before trying a failed call again.

Retries are safe only when repeating the call cannot do a thing twice: reads
(``Get*``/``List*``/``Query*``…) or mutations that carry a non-empty
``request_id`` (the server de-duplicates on it).  Inference calls spend money
and have no idempotency key, so they are never repeated; a stream is never
repeated once a message has arrived.  Only "come back later" failures are
retried: UNAVAILABLE and RESOURCE_EXHAUSTED, never a 402-style
FAILED_PRECONDITION nor anything the server marked ``x-should-retry: false``.

One exception to the idempotency rule: ``TenantProvisioningError`` from an
admin call.  The server refuses such a call before doing anything (the tenant
is still being set up, a matter of seconds), so a key created right after its
tenant is simply repeated at the server's ``retry-after`` until provisioning
ends, for at most ``provisioning_retries`` attempts and never past the call's
deadline.  (Inference calls stay unrepeated, as every other failure of theirs.)
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc
from google.protobuf.message import Message

from relay_sdk._errors import PaymentRequiredError, RelayError, TenantProvisioningError

RETRYABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})
# Verbs that only read. Anything else (Create, Update, Revoke, Rotate, Transition,
# Disable, Upsert, Add, Remove, Set, Delete, Stream, …) may change state or cost money.
READ_ONLY_PREFIXES = ("Get", "List", "Query", "Search", "Count", "Check")


def is_idempotent(method_name: str, request: Message) -> bool:
    """True when repeating ``method_name(request)`` cannot have an effect twice."""
    if method_name.startswith(READ_ONLY_PREFIXES):
        return True
    fields = request.DESCRIPTOR.fields_by_name
    return "request_id" in fields and bool(getattr(request, "request_id"))


def is_retryable(error: RelayError) -> bool:
    """True for transient failures the server wants the client to retry."""
    if error.code not in RETRYABLE_CODES or isinstance(error, PaymentRequiredError):
        return False
    if error.should_retry is False:
        return False
    # gRPC's own RESOURCE_EXHAUSTED for an oversized message never gets better.
    return not (error.reason is None and "larger than max" in error.message)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter; the server's ``retry-after`` wins when it sends one.

    Attempt ``n`` (0-based) waits ``min(max_backoff, initial_backoff * multiplier**n)``,
    shortened by up to ``jitter`` (a fraction) at random so that clients spread out.
    A ``retry-after`` above ``max_retry_after`` is not waited for: the error is raised.
    ``sleep``/``async_sleep`` are injectable so tests need not wait.
    """

    max_retries: int = 2
    initial_backoff: float = 0.5
    max_backoff: float = 8.0
    multiplier: float = 2.0
    jitter: float = 0.25
    max_retry_after: float = 60.0
    provisioning_retries: int = 30
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    async_sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep, repr=False)

    def backoff(self, attempt: int) -> float:
        base = min(self.max_backoff, self.initial_backoff * self.multiplier**attempt)
        return base * (1.0 - self.jitter * random.random())

    def delay(
        self, attempt: int, error: RelayError, *, idempotent: bool, remaining: float | None, admin: bool = False
    ) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``, or None to give up and raise ``error``.

        ``remaining`` is what is left of the caller's overall deadline (None: no deadline).
        """
        if admin and isinstance(error, TenantProvisioningError) and error.should_retry is not False:
            if attempt >= self.provisioning_retries or self.max_retries == 0:  # 0 disables every retry
                return None
            wait = min(error.retry_after if error.retry_after is not None else 1.0, 5.0)
            return None if remaining is not None and wait >= remaining else wait
        if attempt >= self.max_retries or not idempotent or not is_retryable(error):
            return None
        if error.retry_after is not None:
            if error.retry_after > self.max_retry_after:
                return None
            wait = error.retry_after
        else:
            wait = self.backoff(attempt)
        if remaining is not None and wait >= remaining:
            return None  # the deadline would pass while waiting
        return wait


class Deadline:
    """One overall deadline shared by every attempt of a call."""

    def __init__(self, timeout: float | None) -> None:
        self._end = None if timeout is None else time.monotonic() + timeout

    def remaining(self) -> float | None:
        return None if self._end is None else max(0.0, self._end - time.monotonic())
