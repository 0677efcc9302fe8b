"""Cross-node invariants on the multi-node topology (tests/support/cluster.py): two gateway nodes
behind a front Envoy, one Redis Cluster (3 masters + 3 replicas), Postgres through PgBouncer.

Caps, rate limits and revocations are global because their state lives in the cluster (and the
policy bus reaches every node); failures — a Redis master, a whole node — are survived with
nothing billed twice: every request the clients saw answered has exactly one request-log row.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
import pytest
import redis as sync_redis
from redis.crc import key_slot

from relay_server.stack.pgbouncer import pgbouncer_available
from relay_server.stack.processes import wait_until
from relay_server.storage.redis.client import tenant_key
from relay_server.storage.redis.spend import cap_keys
from tests.support.cluster import RelayCluster, start_relay_cluster
from tests.support.metering import Key, make_key, make_tenant
from tests.support.pg import PgCluster
from tests.support.stack import RelayStack, start_node

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(180),
    pytest.mark.skipif(not pgbouncer_available(), reason="Debian's pgbouncer is not installed (make pgbouncer)"),
]

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 5}
CHUNK_DELAY_S = 0.05  # test-mode streams take ~a second: node kills land mid-stream


@pytest.fixture(scope="module")
def topology(pg_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayCluster]:
    db = pg_cluster.create_database()
    cluster = start_relay_cluster(
        pg_cluster, db, Path(tmp_path_factory.mktemp("relay-cluster")),
        extra_env={"RELAY_TESTMODE_CHUNK_DELAY_S": str(CHUNK_DELAY_S)},
    )  # fmt: skip
    yield cluster
    cluster.stop()
    pg_cluster.drop_database(db)


def _node_url(cluster: RelayCluster, i: int) -> str:
    return cluster.nodes[i].base_url


async def _chat(http: httpx.AsyncClient, base_url: str, key: Key, **extra: object) -> httpx.Response:
    return await http.post(f"{base_url}/chat/completions", json={**BODY, **extra}, headers={"authorization": f"Bearer {key.secret}"})


def _rows(cluster: RelayCluster, key: Key) -> list[tuple[str, str, int | None, int | None]]:
    with psycopg.connect(cluster.db.owner_dsn) as conn:
        return conn.execute(
            "SELECT id, status, http_status, cost_micros FROM requests WHERE api_key_id = %s", (key.key_id,)
        ).fetchall()


def _wait_rows(cluster: RelayCluster, key: Key, n: int, timeout: float = 20) -> list[tuple[str, str, int | None, int | None]]:
    """Rows are written off the hot path in batches: poll (bounded) until ``n`` are there."""
    deadline = time.monotonic() + timeout
    while True:
        rows = _rows(cluster, key)
        if len(rows) >= n or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def _access_lines(cluster: RelayCluster, i: int) -> int:
    path = cluster.nodes[i].workdir / "envoy-access.log"
    return len(path.read_text().splitlines()) if path.exists() else 0


def _unit_cost(cluster: RelayCluster) -> int:
    tenant = make_tenant(cluster.db.owner_dsn)
    key = make_key(cluster.db.owner_dsn, tenant)
    with httpx.Client(timeout=30) as http:
        answer = http.post(f"{cluster.base_url}/chat/completions", json=BODY, headers={"authorization": f"Bearer {key.secret}"})
    assert answer.status_code == 200, answer.text
    [row] = _wait_rows(cluster, key, 1)
    assert row[3] and row[3] > 0
    return int(row[3])


async def test_200_concurrent_capped_requests_over_both_nodes_settle_within_the_cap(topology: RelayCluster) -> None:
    unit = _unit_cost(topology)
    cap = unit * 20 + unit // 2  # room for 20 requests, not 21
    tenant = make_tenant(topology.db.owner_dsn)
    key = make_key(topology.db.owner_dsn, tenant, cap_micros=cap, cap_window="daily")
    before = [_access_lines(topology, i) for i in range(2)]
    # Half on each node's own Envoy: the invariant is about two nodes sharing one cap, whatever the
    # front Envoy's health checks make of a loaded machine (its balancing: the node-kill test).
    limits = httpx.Limits(max_connections=200)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        answers = await asyncio.wait_for(
            asyncio.gather(*(_chat(http, _node_url(topology, i % 2), key) for i in range(200))), 120
        )
    statuses = Counter(a.status_code for a in answers)
    # On a loaded machine a Redis call can miss its 250 ms deadline: the cap then fails closed (503).
    assert set(statuses) <= {200, 402, 503}, statuses
    assert all(a.json()["error"]["code"] == "spend_cap_unavailable" for a in answers if a.status_code == 503)
    assert 1 <= statuses[200] <= 20 and statuses[402] + statuses[503] >= 180, statuses
    rows = _wait_rows(topology, key, 200)
    assert len(rows) == 200 and len({r[0] for r in rows}) == 200  # each request logged exactly once
    assert sum(r[3] or 0 for r in rows if r[1] == "success") <= cap
    # Envoy flushes its access log on a timer (1 s by default): wait for the lines, bounded.
    deadline = time.monotonic() + 15
    while True:
        after = [_access_lines(topology, i) for i in range(2)]
        if all(a > b for a, b in zip(after, before, strict=True)) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert all(a > b for a, b in zip(after, before, strict=True)), "both nodes served part of the burst"


async def test_a_key_revoked_through_node_a_is_refused_on_node_b(topology: RelayCluster) -> None:
    tenant = make_tenant(topology.db.owner_dsn)
    key = make_key(topology.db.owner_dsn, tenant)
    async with httpx.AsyncClient(timeout=30) as http:
        assert (await _chat(http, _node_url(topology, 1), key)).status_code == 200  # node B has it cached now
        revoked = await http.post(
            f"{_node_url(topology, 0)}/keys/{key.key_id}:revoke", json={"tenant_id": tenant},
            headers={"authorization": f"Bearer {topology.admin_token}"},
        )  # fmt: skip
        assert revoked.status_code == 200, revoked.text
        refused = await _chat(http, _node_url(topology, 1), key)
        assert refused.status_code == 401, refused.text


async def test_rate_limits_are_global(topology: RelayCluster) -> None:
    tenant = make_tenant(topology.db.owner_dsn)
    key = make_key(topology.db.owner_dsn, tenant, rate_limits={"rpm": 10})
    async with httpx.AsyncClient(timeout=30) as http:
        answers = [await _chat(http, _node_url(topology, i % 2), key) for i in range(24)]
    statuses = [a.status_code for a in answers]
    assert statuses.count(200) == 10 and statuses.count(429) == 14, statuses
    assert {a.status_code for i, a in enumerate(answers) if i % 2 == 0} >= {200}  # both nodes admitted some
    assert {a.status_code for i, a in enumerate(answers) if i % 2 == 1} >= {200}


def _master_for(cluster: RelayCluster, key: str) -> int:
    slot = key_slot(key.encode())
    for port, ranges in cluster.redis.masters().items():
        if any(a <= slot <= b for a, b in ranges):
            return port
    raise AssertionError("no master serves the slot")


async def test_a_redis_master_killed_under_load(topology: RelayCluster) -> None:
    unit = _unit_cost(topology)
    cap = unit * 100_000  # binding (checked on every admission) but not reached by this load
    tenant = make_tenant(topology.db.owner_dsn, plan="enterprise")  # the load must not reach the pro plan's 1500 rpm
    key = make_key(topology.db.owner_dsn, tenant, cap_micros=cap, cap_window="daily")
    master = _master_for(topology, tenant_key(tenant, "x"))
    answers: list[httpx.Response] = []
    stop = asyncio.Event()

    async def load(http: httpx.AsyncClient) -> None:
        while not stop.is_set():
            answers.append(await _chat(http, topology.base_url, key))

    async with httpx.AsyncClient(timeout=30) as http:
        workers = [asyncio.create_task(load(http)) for _ in range(6)]
        try:
            await asyncio.sleep(0.5)
            topology.redis.node(master).stop()  # the tenant's shard loses its master under load
            await asyncio.to_thread(_wait_promoted, topology, tenant, master)
            promoted_at = len(answers)
            await asyncio.sleep(1.5)
        finally:
            stop.set()
            await asyncio.gather(*workers)
        after = answers[promoted_at:]
        # Traffic flows again once the replica took over, admitted under the cap.
        assert any(a.status_code == 200 for a in after), Counter(a.status_code for a in after)
        # The cap still binds after the failover: a key with a tiny cap is refused through the new master.
        # Until every worker's wire has the new slot map, a cap check may still fail closed (503): never admitted.
        capped = make_key(topology.db.owner_dsn, tenant, cap_micros=1, cap_window="daily")
        deadline = time.monotonic() + 15
        probe = await _chat(http, topology.base_url, capped)
        while probe.status_code == 503 and time.monotonic() < deadline:
            assert probe.json()["error"]["code"] == "spend_cap_unavailable", probe.text
            await asyncio.sleep(0.2)
            probe = await _chat(http, topology.base_url, capped)
        assert probe.status_code == 402, probe.text

    statuses = Counter(a.status_code for a in answers)
    assert set(statuses) <= {200, 402, 429, 503}, statuses  # caps fail closed while the shard has no master
    assert all(a.status_code != 500 for a in answers)
    rows = _wait_rows(topology, key, len(answers))
    ids = [r[0] for r in rows]
    assert len(ids) == len(set(ids)) == len(answers)  # nothing logged twice, nothing lost
    assert {a.headers.get("x-request-id") for a in answers if a.status_code == 200} <= set(ids)
    billed = sum(r[3] or 0 for r in rows if r[1] == "success")
    assert billed <= cap
    # The cap's running total on the promoted master never exceeds what the request log billed
    # (nothing settled twice). It may fall short by the requests in flight when the master died:
    # a settle sent to the dead master, or one not yet replicated, is lost (docs/operations-cluster.md);
    # the request log stays the truth.
    with sync_redis.RedisCluster(host="127.0.0.1", port=_master_for(topology, tenant_key(tenant, "x"))) as r:
        spent = r.hget(cap_keys(tenant, "key", key.key_id, datetime.now(UTC).strftime("d%Y%m%d"))[0], "spent")
    assert spent is not None and billed - 6 * unit <= int(spent) <= billed, (int(spent or 0), billed, unit)


def _wait_promoted(cluster: RelayCluster, tenant: str, old: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if _master_for(cluster, tenant_key(tenant, "x")) != old:
                return
        except (RuntimeError, AssertionError, sync_redis.RedisError):
            pass
        time.sleep(0.1)
    raise AssertionError("the replica was not promoted")


async def test_a_node_killed_under_load(topology: RelayCluster) -> None:
    tenant = make_tenant(topology.db.owner_dsn)
    key = make_key(topology.db.owner_dsn, tenant)
    victim = topology.nodes[0]
    # An earlier test (a Redis failover, a node restart) may have left a node out of the front Envoy's
    # rotation for a few health-check rounds: the first wave must spread over both nodes.
    wait_until(lambda: topology.healthy_nodes() == len(topology.nodes), timeout=30, what="both nodes in rotation")
    results: list[tuple[str | None, str]] = []  # (request id, outcome)

    async def streamed(http: httpx.AsyncClient) -> None:
        request_id = None
        try:
            async with http.stream(
                "POST", f"{topology.base_url}/chat/completions", json={**BODY, "stream": True, "max_tokens": 40},
                headers={"authorization": f"Bearer {key.secret}"},
            ) as response:  # fmt: skip
                request_id = response.headers.get("x-request-id")
                if response.status_code != 200:
                    results.append((request_id, f"status {response.status_code}"))
                    return
                text = "".join([chunk async for chunk in response.aiter_text()])
                results.append((request_id, "done" if "[DONE]" in text else "cut"))
        except httpx.HTTPError as exc:
            results.append((request_id, f"error {type(exc).__name__}"))

    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_keepalive_connections=0)) as http:
        first = [asyncio.create_task(streamed(http)) for _ in range(12)]
        await asyncio.sleep(0.6)  # streams in flight on both nodes
        envoy_proc = victim._procs[-1]
        os.kill(envoy_proc.pid, signal.SIGKILL)  # the node's edge dies: its clients are cut at once
        for proc in victim._procs[:-1]:
            proc.terminate()  # its server drains: the cut requests are logged as they end
        await asyncio.gather(*first)
        # The front Envoy routes around the dead node: new requests all succeed.
        second = [asyncio.create_task(streamed(http)) for _ in range(10)]
        await asyncio.gather(*second)

    _restart(victim)  # back for the other tests (their order is random)
    outcomes = Counter(o for _, o in results)
    assert all(o == "done" for _, o in results[-10:]), outcomes
    # Streams take ~2 s and the kill lands at 0.6 s: those on the killed node were cut, cleanly (no hang).
    assert any(o != "done" for _, o in results[:12]), outcomes
    seen = [rid for rid, _ in results if rid]
    rows = _wait_rows(topology, key, len(seen))
    ids = Counter(r[0] for r in rows)
    assert all(n == 1 for n in ids.values())  # logged exactly once, whichever way it ended
    assert set(seen) <= set(ids), "a request that reached a server has its row"


def _restart(node: RelayStack) -> None:
    for proc in node._procs:  # noqa: SLF001
        proc.wait(30)
    node._procs.clear()  # noqa: SLF001
    start_node(node, extra_env={"RELAY_DB_TRANSACTION_POOLING": "1", "RELAY_TESTMODE_CHUNK_DELAY_S": str(CHUNK_DELAY_S)})
