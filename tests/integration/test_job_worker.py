"""The job worker as server processes run it (``start(jobs_enabled=True)``):
jobs queued in a transaction run once committed, periodic sweeps tick once for
the whole cluster, each process fetches only what it registered, and stopping
is prompt."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from relay_server.storage.postgres import jobs
from relay_server.storage.postgres.pool import Database
from relay_server.workers.runner import BackgroundRunner, Periodic

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]


async def _until(condition, what: str, timeout_s: float = 15.0) -> None:  # noqa: ANN001
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_workers_run_committed_jobs_once_and_periodic_ticks_once_per_cluster(database: Database) -> None:
    seen: list[tuple[str, int]] = []
    ticks: list[str] = []
    tick_times: list[float] = []

    def runner(name: str, *, sweep: bool) -> BackgroundRunner:
        async def handle(job: jobs.Job) -> None:
            seen.append((name, job.payload["n"]))

        async def tick() -> None:
            ticks.append(name)
            tick_times.append(asyncio.get_running_loop().time())

        r = BackgroundRunner(database, {"example": handle}, poll_s=30, worker_name=name)  # LISTEN/NOTIFY wakes it, not polling
        if sweep:
            r.add_periodic(Periodic("example-sweep", 1, tick))
        return r

    a, b, plain = runner("a", sweep=True), runner("b", sweep=True), runner("plain", sweep=False)
    for r in (a, b, plain):
        r.start()
    try:
        async with database.system_tx() as conn:
            await jobs.enqueue(conn, "example", payload={"n": 1})
            await jobs.enqueue(conn, "unhandled_here", payload={"n": 2})
            await asyncio.sleep(0.3)
            assert seen == [], "not visible before commit"
        await _until(lambda: len(seen) == 1, "the committed job")
        await _until(lambda: len(ticks) >= 3, "three periodic ticks")
        await asyncio.sleep(0.5)
        assert [n for _, n in seen] == [1], "ran once, by one of the workers"
        async with database.system_tx() as conn:
            left = await (await conn.execute(
                "SELECT task_name, status::text AS status FROM procrastinate_jobs WHERE task_name = 'unhandled_here'")).fetchall()  # fmt: skip
            strays = await (await conn.execute(
                "SELECT count(*) AS n FROM procrastinate_jobs WHERE status = 'failed'")).fetchone()  # fmt: skip
        # A tick per second for the cluster: two workers running one tick would show as a pair
        # of runs a moment apart.
        gaps = [b - a for a, b in itertools.pairwise(tick_times)]
        assert min(gaps) > 0.5, f"each tick ran once: {gaps}"
        assert "plain" not in ticks, "a process that did not register the sweep never runs it"
        assert left == [{"task_name": "unhandled_here", "status": "todo"}], "left for a process that handles it"
        assert strays["n"] == 0
    finally:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.gather(a.stop(), b.stop(), plain.stop())
        assert loop.time() - started < 5, "stopping is prompt when no job runs"
