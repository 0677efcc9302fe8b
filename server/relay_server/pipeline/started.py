"""A coroutine started in the caller's task: run now up to its first wait, finished when awaited.

Admission prefetches the request's plan so that the planner's Redis reads leave in the same
write as admission's script.  A task did that, at the price of a task per request: its
creation, its first step scheduled through the loop, a wake-up when the reads came back and
another for the request waiting on it.  ``Started`` runs the coroutine's first step at once,
in the request's own task (its context, its ``current_task``), and the request finishes it by
awaiting it — one task and its loop passes fewer per request, the same overlap.

The coroutine's waits are re-yielded to the awaiting task, so cancellation reaches the
coroutine as it would reach any awaited coroutine.  ``discard`` drops one nobody will await.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Started(Generic[T]):
    __slots__ = ("_coro", "_error", "_finished", "_result", "_waiting")

    def __init__(self, coro: Coroutine[Any, Any, T]) -> None:
        self._coro = coro
        self._waiting: Any = None
        self._finished = False
        self._result: Any = None
        self._error: BaseException | None = None
        self._step(None)

    def done(self) -> bool:
        return self._finished

    def _step(self, error: BaseException | None) -> None:
        try:
            waiting = self._coro.send(None) if error is None else self._coro.throw(error)
        except StopIteration as stop:
            self._finished, self._result = True, stop.value
        except (KeyboardInterrupt, SystemExit):
            self._finished = True
            raise  # as a task does: these stop the program, not the request
        except BaseException as err:  # noqa: BLE001 (kept, raised to whoever awaits)
            self._finished, self._error = True, err
        else:
            self._waiting = waiting

    def __await__(self) -> Generator[Any, None, T]:
        while not self._finished:
            waiting = self._waiting
            if waiting is None or not waiting.done():
                if waiting is not None:
                    waiting._asyncio_future_blocking = True  # noqa: SLF001 (the protocol of a yielded future)
                try:
                    yield waiting
                except BaseException as err:  # noqa: BLE001 (the awaiting task cancelled: the coroutine decides)
                    self._step(err)
                    continue
            self._step(None)
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        return self._result

    def discard(self) -> None:
        """Nobody will await it: cancel it where it waits, as a task is cancelled.  Its result or
        error is dropped; only a coroutine whose clean-up waits too unwinds in a task of its own."""
        if not self._finished:
            if isinstance(self._waiting, asyncio.Future):
                self._waiting.cancel()
            self._step(asyncio.CancelledError())
        if self._finished:
            self._error = None
            return
        task = asyncio.ensure_future(_unwind(self))
        _UNWINDING.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(_UNWINDING.discard)


_UNWINDING: set[asyncio.Future[None]] = set()


async def _unwind(started: Started[Any]) -> None:
    try:
        await started
    except BaseException:  # noqa: BLE001, S110 (discarded: the cancellation it was sent, or its own error)
        pass
