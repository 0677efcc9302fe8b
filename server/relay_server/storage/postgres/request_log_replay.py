"""``relay spool replay``: an operator's replay of a request-log spool.

The server replays closed spool segments by itself; dead letters (rows
Postgres refused even after repair) wait for this command, run once the cause
is fixed (a migration, a restored catalog row).  Rows go through the same
repair as the writer's (``insert_row_repaired``), so a row that can be stored
sanitised is, and bills.  Inserts are idempotent on the request id, so a
second run, or a run racing a server's own replay, writes nothing twice.
Rows still refused are written back to the dead-letter file.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from relay_server.storage.postgres.request_log import RequestLogStore, RequestRow, insert_row_repaired
from relay_server.storage.spool import Spool


@dataclass
class ReplayReport:
    written: int = 0
    sanitised: int = 0
    still_dead: int = 0


async def _replay_rows(store: RequestLogStore, rows: list[RequestRow], report: ReplayReport) -> list[RequestRow]:
    dead: list[RequestRow] = []
    for row in rows:
        outcome, _ = await insert_row_repaired(store, row)
        if outcome == "rejected":
            dead.append(row)
        else:
            report.written += 1
            report.sanitised += outcome == "sanitised"
    return dead


async def replay_spool(store: RequestLogStore, spool: Spool) -> ReplayReport:
    """Write every closed segment and every dead letter; a transient failure gives the files back."""
    report = ReplayReport()
    claimed = await asyncio.to_thread(spool.claim)
    dead_files = await asyncio.to_thread(spool.claim_dead_letters)
    for path in claimed + dead_files:
        rows = [RequestRow.from_json(r) for r in await asyncio.to_thread(spool.read, path)]
        try:
            dead = await _replay_rows(store, rows, report)
        except BaseException:
            if path in claimed:
                await asyncio.to_thread(spool.release, path)
            else:  # back into the dead-letter file: nothing is lost, a rerun finds it there
                await asyncio.to_thread(spool.dead_letter, [r.to_json() for r in rows])
                await asyncio.to_thread(spool.done, path)
            raise
        if dead:
            await asyncio.to_thread(spool.dead_letter, [r.to_json() for r in dead])
        report.still_dead += len(dead)
        await asyncio.to_thread(spool.done, path)
    return report
