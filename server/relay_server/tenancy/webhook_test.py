"""A test event for a tenant's webhook, on request (the console's "send a test event").

It goes the way every tenant event goes (``PostgresEvents.emit``: an audit row
and a ``webhook_deliveries`` row the webhook worker signs and delivers with
retries), so a tenant sees its receiver, its signature check and Relay's
destination rules work before a real event depends on them.  The request itself
is audited as the caller (``webhook.test_requested``).
"""

from __future__ import annotations

from relay_server.errors import ErrorKind, RelayError
from relay_server.storage.postgres.pool import Database
from relay_server.storage.postgres.tenant_config import read_config
from relay_server.storage.postgres.webhooks import PostgresEvents
from relay_server.tenancy.calls import Call

EVENT_TYPE = "webhook.test"


class WebhookTester:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._events = PostgresEvents(db)

    async def send(self, call: Call, tenant: str) -> tuple[str, str]:
        """Queue a test event; returns (event id, the URL it goes to)."""
        call.principal.require("settings:update")
        tenant_id = call.principal.tenant_scope(tenant)
        event_id = f"{EVENT_TYPE}:{tenant_id}:{call.audit_request_id}"
        async with self._db.tenant_tx(tenant_id) as conn:
            url = (await read_config(conn, tenant_id)).get("webhook_url", "").strip()
            if not url:
                raise RelayError(ErrorKind.FAILED_PRECONDITION, "Set a webhook URL first.", code="no_webhook_url")
            await call.audit(
                conn, tenant_id, "webhook.test_requested", resource_type="tenant_config", resource_id=tenant_id,
                metadata={"event_id": event_id, "url": url},
            )  # fmt: skip
        await self._events.emit(tenant_id, EVENT_TYPE, event_id, {
            "tenant_id": tenant_id, "test": True, "message": "A test event from Relay: your webhook receives events.",
        })  # fmt: skip
        return event_id, url
