"""``Started``: a coroutine run to its first wait in the caller's task, finished when awaited."""

from __future__ import annotations

import asyncio

import pytest

from relay_server.pipeline.started import Started


async def test_the_first_step_runs_at_once_in_the_callers_task_and_the_rest_when_awaited() -> None:
    trail: list[str] = []
    caller = asyncio.current_task()
    reply: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def plan() -> int:
        trail.append("sent")
        assert asyncio.current_task() is caller  # no task of its own
        value = await reply
        trail.append("read")
        return value * 2

    started = Started(plan())
    assert trail == ["sent"] and not started.done()  # ran up to its wait, before any loop pass
    asyncio.get_running_loop().call_soon(reply.set_result, 21)
    assert await started == 42
    assert trail == ["sent", "read"] and started.done()


async def test_a_coroutine_that_never_waits_is_done_at_once_and_its_error_raised_when_awaited() -> None:
    async def fails() -> int:
        raise ValueError("no route")

    async def answers() -> int:
        return 7

    refused, ready = Started(fails()), Started(answers())
    assert refused.done() and ready.done()
    assert await ready == 7
    with pytest.raises(ValueError, match="no route"):
        await refused


async def test_an_error_after_the_first_wait_and_several_waits_in_a_row() -> None:
    loop = asyncio.get_running_loop()

    async def reads() -> str:
        await asyncio.sleep(0)  # a bare yield to the loop
        first: asyncio.Future[str] = loop.create_future()
        loop.call_later(0.01, first.set_result, "a")
        value = await first
        await asyncio.sleep(0.01)
        raise RuntimeError(f"failed after {value}")

    with pytest.raises(RuntimeError, match="failed after a"):
        await Started(reads())


async def test_cancelling_the_awaiting_task_cancels_the_coroutine_where_it_waits() -> None:
    reply: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    cleaned: list[str] = []

    async def plan() -> int:
        try:
            return await reply
        except asyncio.CancelledError:
            cleaned.append("cancelled")
            raise

    started = Started(plan())

    async def request() -> int:
        return await started

    task = asyncio.ensure_future(request())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == ["cancelled"] and reply.cancelled()


async def test_discard_unwinds_a_waiting_coroutine_even_when_its_clean_up_waits() -> None:
    reply: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    cleaned: list[str] = []

    async def plan() -> int:
        try:
            return await reply
        finally:
            await asyncio.sleep(0)  # clean-up that itself waits: close() could not run it
            cleaned.append("closed")

    Started(plan()).discard()
    assert reply.cancelled()
    for _ in range(5):
        await asyncio.sleep(0)
    assert cleaned == ["closed"]


async def test_discard_cancels_a_waiting_coroutine_at_once_without_a_task() -> None:
    reply: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    cleaned: list[str] = []

    async def plan() -> int:
        try:
            return await reply
        except asyncio.CancelledError:
            cleaned.append("cancelled")
            raise

    tasks_before = len(asyncio.all_tasks())
    started = Started(plan())
    started.discard()
    assert cleaned == ["cancelled"] and reply.cancelled() and started.done()  # before any loop pass
    assert len(asyncio.all_tasks()) == tasks_before
