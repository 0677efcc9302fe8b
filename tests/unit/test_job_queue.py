"""The job queue's pieces that need no database: the schema pinned in
migration 0021 is exactly the installed procrastinate's, intervals become cron
schedules, retries follow the back-off, and job arguments stay out of logs."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from importlib import resources
from pathlib import Path

import procrastinate
import pytest

from relay_server.observability.log_lines import drop_job_arguments
from relay_server.workers.job_app import PermanentJobError, _Retry, cron_for, default_backoff

MIGRATION = Path(__file__).resolve().parents[2] / "migrations" / "0021_procrastinate.sql"


def test_migration_holds_the_installed_procrastinate_schema_byte_for_byte() -> None:
    text = MIGRATION.read_text(encoding="utf-8")
    start, end = "-- >>> procrastinate 3.10.0 schema.sql\n", "-- <<< procrastinate 3.10.0 schema.sql\n"
    pinned = text[text.index(start) + len(start):text.index(end)]
    assert procrastinate.__version__ == "3.10.0", "a new procrastinate needs a migration with its schema changes"
    assert pinned == resources.files("procrastinate").joinpath("sql/schema.sql").read_text(encoding="utf-8")


@pytest.mark.parametrize(("interval_s", "cron"), [
    (0.2, "* * * * * */1"), (2, "* * * * * */2"), (15, "* * * * * */15"), (30, "* * * * * */30"),
    (60, "*/1 * * * *"), (300, "*/5 * * * *"), (3600, "0 */1 * * *"),
])  # fmt: skip
def test_intervals_become_cron_schedules(interval_s: float, cron: str) -> None:
    assert cron_for(interval_s) == cron


def _job(attempts: int) -> procrastinate.jobs.Job:
    return procrastinate.jobs.Job(id=1, queue="k", lock=None, queueing_lock=None, task_name="k", attempts=attempts)


def test_retries_back_off_exponentially_until_max_attempts_and_never_for_permanent_errors() -> None:
    retry = _Retry(max_attempts=4, backoff=default_backoff)
    waits = [retry.get_retry_decision(exception=RuntimeError("x"), job=_job(n)) for n in range(4)]
    assert [w.retry_at is not None for w in waits[:3]] == [True] * 3 and waits[3] is None, "the 4th try is the last"
    assert [default_backoff(n) for n in (1, 2, 3, 20)] == [timedelta(seconds=s) for s in (1, 2, 4, 300)]
    assert retry.get_retry_decision(exception=PermanentJobError("gone"), job=_job(0)) is None
    cut_short = retry.get_retry_decision(exception=asyncio.CancelledError(), job=_job(1))
    later = retry.get_retry_decision(exception=RuntimeError("x"), job=_job(1))
    assert cut_short is not None and later is not None and cut_short.retry_at < later.retry_at, "a shutdown retries at once"


def test_job_arguments_never_reach_the_log_output() -> None:
    call = "provision_tenant[7](tenant_id='ten_1', payload={'first_key': {'key_hash': 'h) x'}})"
    record = logging.makeLogRecord({
        "name": "procrastinate.worker.w1", "msg": f"Job {call} ended with status: Error, lasted 0.1 s",
        "job": {"id": 7, "task_name": "provision_tenant", "call_string": call, "task_kwargs": {"payload": "x"}},
    })  # fmt: skip
    assert drop_job_arguments(record)
    assert record.getMessage() == "Job provision_tenant[7] ended with status: Error, lasted 0.1 s"
    assert record.job == {"id": 7, "task_name": "provision_tenant"}
    other = logging.makeLogRecord({"name": "procrastinate.periodic", "msg": "Starting job t[3](timestamp=1)"})
    drop_job_arguments(other)
    assert other.getMessage() == "Starting job t[3]"
