"""Server streams as plain (async) iterators of typed messages.

A stream starts on the first ``next()``; until the first message arrives a
retryable failure may start it again (same rules as unary calls), afterwards a
failure is raised as a :class:`~relay_sdk.RelayError`, because the caller has
already consumed part of the answer.  Closing or cancelling early cancels the
RPC, so the server stops generating (and billing) output.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Generator
from types import TracebackType
from typing import Any, Generic, TypeVar, cast

import grpc
import grpc.aio

from relay_sdk._errors import from_rpc_error
from relay_sdk._retry import Deadline, RetryPolicy

T = TypeVar("T")


def _request_id(metadata: Any) -> str | None:
    for key, value in metadata or ():
        if key == "x-request-id":
            return value if isinstance(value, str) else value.decode()
    return None


class ResponseStream(Generic[T]):
    """Iterator over a server stream; use as a context manager or call :meth:`close` when stopping early."""

    def __init__(self, start: Callable[[float | None], Any], retry: RetryPolicy, idempotent: bool, timeout: float | None) -> None:
        self._start = start
        self._retry = retry
        self._idempotent = idempotent
        self._timeout = timeout
        self._call: Any = None
        self._cancelled = False
        self._messages = self._run()

    def __iter__(self) -> ResponseStream[T]:
        return self

    def __next__(self) -> T:
        return next(self._messages)

    def _run(self) -> Generator[T, None, None]:
        deadline, attempt = Deadline(self._timeout), 0
        while True:
            call = self._call = self._start(deadline.remaining())
            try:
                first = cast(T, next(call))
                break
            except StopIteration:
                return
            except grpc.RpcError as exc:
                if self._cancelled:
                    return
                error = from_rpc_error(exc)
                wait = self._retry.delay(attempt, error, idempotent=self._idempotent, remaining=deadline.remaining())
                if wait is None:
                    raise error from exc
            self._retry.sleep(wait)
            attempt += 1
        try:
            yield first
            for message in call:
                yield cast(T, message)
        except grpc.RpcError as exc:
            if not self._cancelled:
                raise from_rpc_error(exc) from exc
        finally:
            call.cancel()  # no-op once finished; stops the server when the caller stops early

    @property
    def request_id(self) -> str | None:
        """The server's ``x-request-id``, known once the first message has arrived."""
        return _request_id(self._call.initial_metadata()) if self._call is not None else None

    def cancel(self) -> None:
        """Cancel the RPC (safe from another thread); the iteration then ends quietly."""
        self._cancelled = True
        if self._call is not None:
            self._call.cancel()

    def close(self) -> None:
        """Stop here: cancels the RPC if it is still running (call from the iterating thread)."""
        self._cancelled = True
        self._messages.close()

    def __enter__(self) -> ResponseStream[T]:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class AsyncResponseStream(Generic[T]):
    """Async iterator over a server stream; use ``async with`` or :meth:`aclose` when stopping early."""

    def __init__(self, start: Callable[[float | None], Any], retry: RetryPolicy, idempotent: bool, timeout: float | None) -> None:
        self._start = start
        self._retry = retry
        self._idempotent = idempotent
        self._timeout = timeout
        self._call: Any = None
        self._cancelled = False
        self._messages = self._run()

    def __aiter__(self) -> AsyncResponseStream[T]:
        return self

    async def __anext__(self) -> T:
        if self._cancelled:
            raise StopAsyncIteration
        try:
            return await anext(self._messages)
        except asyncio.CancelledError:
            # grpc.aio reports a cancelled call as CancelledError; after our own
            # cancel() that is the end of the stream, not the task being cancelled.
            if self._cancelled:
                raise StopAsyncIteration from None
            raise

    async def _run(self) -> AsyncGenerator[T, None]:
        deadline, attempt = Deadline(self._timeout), 0
        while True:
            call = self._call = self._start(deadline.remaining())
            try:
                first = await call.read()
                break
            except grpc.RpcError as exc:
                error = from_rpc_error(exc)
                wait = self._retry.delay(attempt, error, idempotent=self._idempotent, remaining=deadline.remaining())
                if wait is None:
                    raise error from exc
            await self._retry.async_sleep(wait)
            attempt += 1
        try:
            message = first
            while message is not grpc.aio.EOF:
                yield cast(T, message)
                message = await call.read()
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc
        finally:
            call.cancel()

    async def request_id(self) -> str | None:
        """The server's ``x-request-id`` (waits for the response headers)."""
        return _request_id(await self._call.initial_metadata()) if self._call is not None else None

    def cancel(self) -> None:
        """Cancel the RPC; iteration ends (a read in progress returns StopAsyncIteration)."""
        self._cancelled = True
        if self._call is not None:
            self._call.cancel()

    async def aclose(self) -> None:
        await self._messages.aclose()
        self.cancel()

    async def __aenter__(self) -> AsyncResponseStream[T]:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()
