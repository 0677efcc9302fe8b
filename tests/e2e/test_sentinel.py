"""A whole Relay node (server + Envoy) on a Redis master + replica watched by three Sentinels.

``REDIS_URL`` is a ``redis+sentinel://`` URL with the data nodes' password.  Requests flow, rate
limits and spend caps bind; ``SENTINEL FAILOVER`` under load is survived with no 500 and nothing
logged twice, and afterwards limits and caps bind again through the new master.  The password
never appears in the server's log.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from relay_server.stack.redis_cluster import free_cluster_ports
from relay_server.stack.redis_sentinel import RedisSentinelHandle, start_redis_sentinel
from tests.support.metering import Key, make_key, make_tenant
from tests.support.pg import PgCluster
from tests.support.stack import RelayStack, start_stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

PASSWORD = "node-s3ntinel-Pw"  # noqa: S105 (a test topology's password, looked for in the log)
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 5}


@pytest.fixture(scope="module")
def sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisSentinelHandle]:
    ports = free_cluster_ports(5)
    handle = start_redis_sentinel(tmp_path_factory.mktemp("node-sentinel"), ports[:2], ports[2:], password=PASSWORD)
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def node(pg_cluster: PgCluster, sentinel: RedisSentinelHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayStack]:
    db = pg_cluster.create_database()
    stack = start_stack(db, Path(tmp_path_factory.mktemp("relay-sentinel")), redis_url=sentinel.url, workers=2)
    yield stack
    stack.stop()
    pg_cluster.drop_database(db)


async def _chat(http: httpx.AsyncClient, node: RelayStack, key: Key) -> httpx.Response:
    return await http.post(f"{node.base_url}/chat/completions", json=BODY, headers={"authorization": f"Bearer {key.secret}"})


def _row_ids(node: RelayStack, key: Key, n: int, timeout: float = 20) -> list[str]:
    """Rows are written off the hot path in batches: poll (bounded) until ``n`` are there."""
    deadline = time.monotonic() + timeout
    while True:
        with psycopg.connect(node.db.owner_dsn) as conn:
            ids = [r[0] for r in conn.execute("SELECT id FROM requests WHERE api_key_id = %s", (key.key_id,))]
        if len(ids) >= n or time.monotonic() > deadline:
            return ids
        time.sleep(0.1)


async def _limits_bind(http: httpx.AsyncClient, node: RelayStack) -> None:
    """An rpm limit of 3 admits exactly 3 of 6; a key capped at 1 µ$ is refused (402) once its first request settled."""
    tenant = make_tenant(node.db.owner_dsn)
    limited = make_key(node.db.owner_dsn, tenant, rate_limits={"rpm": 3})
    statuses = [(await _chat(http, node, limited)).status_code for _ in range(6)]
    assert statuses.count(200) == 3 and statuses.count(429) == 3, statuses
    capped = make_key(node.db.owner_dsn, tenant, cap_micros=1, cap_window="daily")
    first = await _chat(http, node, capped)
    assert first.status_code in (200, 402), first.text
    assert (await _chat(http, node, capped)).status_code == 402


async def test_a_node_on_sentinel_serves_and_survives_a_failover(node: RelayStack, sentinel: RedisSentinelHandle) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        await _limits_bind(http, node)

        tenant = make_tenant(node.db.owner_dsn, plan="enterprise")  # the load must not reach a plan's rpm
        key = make_key(node.db.owner_dsn, tenant)
        answers: list[httpx.Response] = []
        stop = asyncio.Event()

        async def load() -> None:
            while not stop.is_set():
                answers.append(await _chat(http, node, key))

        first = sentinel.master_port()
        workers = [asyncio.create_task(load()) for _ in range(4)]
        try:
            await asyncio.sleep(0.5)
            await asyncio.to_thread(sentinel.failover)
            deadline = time.monotonic() + 15
            while sentinel.master_port() in (None, first):
                assert time.monotonic() < deadline, "the sentinels never named a new master"
                await asyncio.sleep(0.1)
            switched_at = len(answers)
            await asyncio.sleep(2.5)  # the node's clients move within about a second (docs/operations-cluster.md)
        finally:
            stop.set()
            await asyncio.gather(*workers)
        statuses = Counter(a.status_code for a in answers)
        assert set(statuses) <= {200, 503}, statuses  # no cap or limit applies: only a clean 503 at worst
        assert any(a.status_code == 200 for a in answers[switched_at:]), statuses
        ids = _row_ids(node, key, len(answers))
        assert len(ids) == len(set(ids)) == len(answers)  # nothing logged twice, nothing lost

        # Limits and caps bind through the new master; requests there are served by the node's workers.
        await _limits_bind(http, node)
        second = sentinel.master_port()
        assert second is not None and second != first
        with sentinel.client(second) as direct:
            assert direct.dbsize() > 0

    log = (node.workdir / "server.log").read_text(errors="replace")
    assert PASSWORD not in log
