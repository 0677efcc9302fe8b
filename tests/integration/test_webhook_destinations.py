"""Webhook deliveries never reach internal addresses unless the operator allows
private ones: real receivers on loopback, real DNS (``localhost``), real rows."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from redis.asyncio import Redis

from relay_server.errors import ErrorKind, RelayError
from relay_server.stack.processes import free_port
from relay_server.stack.redis import RedisHandle
from relay_server.storage.postgres.pool import Database
from relay_server.storage.postgres.webhooks import PostgresEvents, WebhookStore
from relay_server.workers.webhooks import SIGNATURE_HEADER, WebhookDispatcher, verify
from tests.support.metering import make_tenant
from tests.support.pg import TestDatabase
from tests.support.tenancy import operator, signup, tenancy_for

pytestmark = pytest.mark.asyncio

SECRET = "whsec_destinations_0123456789"


class Receiver:
    """A webhook endpoint on 127.0.0.1 that records every request it gets."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.port = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append((dict(request.headers), await request.read()))
        return web.Response(status=204)


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    recv = Receiver()
    app = web.Application()
    app.router.add_post("/hook", recv.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    recv.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield recv
    await runner.cleanup()


async def _one_delivery(database: Database, pg_db: TestDatabase, url: str, *, allow_private: bool) -> dict[str, Any]:
    """Emit one event for a tenant whose stored webhook_url is ``url``, run the dispatcher once, return the row."""
    # Stored directly, as an old row or a row from before this rule would be: delivery must judge it anyway.
    tenant = make_tenant(pg_db.owner_dsn, config={"webhook_url": url, "webhook_secret": SECRET})
    await PostgresEvents(database).emit(tenant, "spend_cap.warning", f"evt-{tenant}", {"key_id": None, "n": 1})
    dispatcher = WebhookDispatcher(WebhookStore(database), allow_private=allow_private)
    try:
        assert await dispatcher.run_once() == 1
    finally:
        await dispatcher.close()
    async with database.system_tx() as conn:
        [row] = await (await conn.execute("SELECT * FROM webhook_deliveries WHERE tenant_id = %s", (tenant,))).fetchall()
    return dict(row)


@pytest.mark.parametrize(("host", "shown"), [("127.0.0.1", "127.0.0.1"), ("[::ffff:127.0.0.1]", "::ffff:7f00:1")])
async def test_a_loopback_literal_is_refused_by_default_and_recorded(
    database: Database, pg_db: TestDatabase, receiver: Receiver, host: str, shown: str
) -> None:
    row = await _one_delivery(database, pg_db, f"http://{host}:{receiver.port}/hook", allow_private=False)
    assert receiver.received == []
    # Dead at once: the same rule would refuse every retry.
    assert (row["status"], row["attempts"], row["last_status_code"]) == ("dead", 1, None)
    assert row["last_error"] == (
        f"destination {shown} is a loopback address; set RELAY_ALLOW_PRIVATE_DESTINATIONS=true to allow it"
    )
    assert SECRET not in row["last_error"]


async def test_the_same_delivery_arrives_signed_when_private_destinations_are_allowed(
    database: Database, pg_db: TestDatabase, receiver: Receiver
) -> None:
    row = await _one_delivery(database, pg_db, f"http://127.0.0.1:{receiver.port}/hook", allow_private=True)
    [(headers, body)] = receiver.received
    assert verify(SECRET, headers[SIGNATURE_HEADER], body)
    assert json.loads(body)["type"] == "spend_cap.warning"
    assert (row["status"], row["last_status_code"], row["last_error"]) == ("delivered", 204, None)


async def test_a_name_resolving_to_loopback_is_refused_by_the_resolver(
    database: Database, pg_db: TestDatabase, receiver: Receiver
) -> None:
    # `localhost` is no IP literal: only the resolver can refuse it.
    row = await _one_delivery(database, pg_db, f"http://localhost:{receiver.port}/hook", allow_private=False)
    assert receiver.received == []
    assert (row["status"], row["attempts"]) == ("dead", 1)
    assert row["last_error"] == (
        "destination localhost resolves only to loopback addresses; set RELAY_ALLOW_PRIVATE_DESTINATIONS=true to allow them"
    )

    allowed = await _one_delivery(database, pg_db, f"http://localhost:{receiver.port}/hook", allow_private=True)
    assert allowed["status"] == "delivered" and len(receiver.received) == 1


@pytest.mark.parametrize("host", ["0.0.0.0", "[::ffff:0.0.0.0]"])
async def test_unspecified_addresses_are_refused_even_when_private_ones_are_allowed(
    database: Database, pg_db: TestDatabase, receiver: Receiver, host: str
) -> None:
    # Linux connects 0.0.0.0 to the local host: without the rule this would reach the receiver.
    row = await _one_delivery(database, pg_db, f"http://{host}:{receiver.port}/hook", allow_private=True)
    assert receiver.received == []
    assert row["status"] == "dead"
    assert row["last_error"].endswith("is an unspecified address; Relay never connects there")


async def test_other_failures_still_retry(database: Database, pg_db: TestDatabase) -> None:
    # An allowed destination where nothing listens: an ordinary failure, scheduled for another attempt.
    row = await _one_delivery(database, pg_db, f"http://127.0.0.1:{free_port()}/hook", allow_private=True)
    assert (row["status"], row["attempts"]) == ("failed", 1)
    assert "RELAY_ALLOW_PRIVATE_DESTINATIONS" not in row["last_error"]


class _Counting(AbstractResolver):
    def __init__(self) -> None:
        self.asked: list[str] = []

    async def resolve(self, host: str, port: int = 0, family: Any = 0) -> list[ResolveResult]:
        self.asked.append(host)
        raise OSError("not expected")

    async def close(self) -> None:
        pass


async def test_aiohttp_does_not_ask_the_resolver_about_ip_literals(receiver: Receiver) -> None:
    # Why the dispatcher judges IP-literal hosts itself before each request.
    resolver = _Counting()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=resolver)) as session:
        async with session.post(f"http://127.0.0.1:{receiver.port}/hook", data=b"{}") as response:
            assert response.status == 204
    assert resolver.asked == [] and len(receiver.received) == 1


@pytest.mark.parametrize("url", ["https://169.254.169.254/x", "https://[fe80::1]/x"])
async def test_save_time_refuses_link_local_literals_with_a_400(
    database: Database, redis_client: Redis, redis_server: RedisHandle, url: str
) -> None:
    async with tenancy_for(database, redis_client, redis_url=redis_server.url) as tenancy:
        tid = (await signup(tenancy, "hooks")).tenant.id
        with pytest.raises(RelayError) as info:
            await tenancy.tenant_settings.update_config(operator(), tid, {"webhook_url": url})
        assert info.value.kind is ErrorKind.BAD_REQUEST and info.value.http_status == 400
        assert "link-local" in info.value.message
        assert "webhook_url" not in await tenancy.tenant_settings.get_config(operator(), tid)
