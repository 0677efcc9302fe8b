"""Long-lived I/O objects are made outside the request that happens to need them first.

A transport keeps a copy of the ``contextvars`` context it was created in (its
protocol callbacks run in it) for as long as the connection lives, and a timer
handle keeps the context it was scheduled in until its time comes, even once
cancelled.  So a pooled upstream connection, the pool's sweep timer or the
per-worker Redis connection, first made while some request was served, pinned
that request's scope — its context, body, principal — long after it ended: a
heap census of a worker after a soak found one finished request per pooled
connection still alive.  Made in a fresh, empty context they pin nothing; their
own log lines carry no request id, which is right for objects that serve many
requests.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def timer_at(loop: asyncio.AbstractEventLoop, when: float, callback: Callable[[], object]) -> asyncio.TimerHandle:
    """``loop.call_at(when, callback)`` in an empty context: a connection's or pool's
    timer is armed by one request and outlives it (it fires, or re-arms itself, later)."""
    return loop.call_at(when, callback, context=contextvars.Context())


def fresh_task(coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    """``coro`` as a task of its own, in an empty context."""
    return asyncio.get_running_loop().create_task(coro, context=contextvars.Context())


async def detached(make: Callable[[], Coroutine[Any, Any, T]], *, discard: Callable[[T], object]) -> T:
    """Await ``make()`` in an empty context.

    Cancelling the caller cancels the work (awaiting a task forwards cancellation
    to it).  A result that was already made when the cancellation arrived is handed
    to ``discard`` (close it), so a dialled connection is never left orphaned.
    """
    task = fresh_task(make())
    try:
        return await task
    except asyncio.CancelledError:
        if task.done() and not task.cancelled() and task.exception() is None:
            discard(task.result())
        raise

