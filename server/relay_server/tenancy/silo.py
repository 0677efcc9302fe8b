"""Where a tenant's data lives: the shared database, or its own (silo).

``tenants.silo_database`` holds a *name*; the server's ``silo_databases``
setting (JSON, name → owner DSN) turns it into a connection, so no DSN — a
secret — is ever stored in a table.

Relay keeps the control plane in the shared database for every tenant:
tenants, users, roles, API keys (authentication must find a key before it
knows the tenant), audit log, configuration and jobs.  A silo holds the data
plane — request log, usage, billing, cache, threads — reached through
``database_for(tenant_id)``.  Those tables reference ``tenants`` and
``api_keys`` by foreign key, so the silo keeps *anchor* copies of the tenant
row and of each key row (``anchor_tenant`` / ``anchor_key``): identity
only, never consulted for authentication.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from relay_server.domain.keys import ApiKeyRow
from relay_server.domain.tenants import TenantRow
from relay_server.errors import ErrorKind, RelayError
from relay_server.storage.postgres.pool import Database


def parse_silo_setting(raw: str) -> dict[str, str]:
    """``{"bigcorp": "postgresql://…"}`` from the setting; empty when unset."""
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"RELAY_SILO_DATABASES is not JSON: {exc}") from None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) and v for k, v in value.items()):
        raise ValueError("RELAY_SILO_DATABASES must be a JSON object of name → DSN strings")
    return dict(value)


class SiloDirectory:
    def __init__(self, db: Database, silos: Mapping[str, str]) -> None:
        self._db = db
        self._silos = dict(silos)
        # Placement never changes after creation, so it is cached for good.
        self._placement: dict[str, str | None] = {}

    def known(self, name: str) -> bool:
        return name in self._silos

    def names(self) -> list[str]:
        return sorted(self._silos)

    async def database_named(self, name: str | None) -> Database:
        if not name:
            return self._db
        dsn = self._silos.get(name)
        if dsn is None:
            # A tenant placed in a database this server does not know must not
            # silently fall back to the shared one.
            raise RelayError(ErrorKind.INTERNAL, f"Silo database `{name}` is not configured on this server.")
        return await self._db.for_tenant(dsn)

    async def database_for(self, tenant_id: str) -> Database:
        """The database holding ``tenant_id``'s data plane."""
        if tenant_id not in self._placement:
            async with self._db.system_tx() as conn:
                row = await (await conn.execute("SELECT silo_database FROM tenants WHERE id = %s", (tenant_id,))).fetchone()
            if row is None:
                raise RelayError(ErrorKind.NOT_FOUND, f"Tenant `{tenant_id}` does not exist.", param="tenant_id")
            self._placement[tenant_id] = row["silo_database"]
        return await self.database_named(self._placement[tenant_id])

    async def anchor_tenant(self, tenant: TenantRow) -> None:
        """Make sure the silo has the tenant row its data-plane rows reference."""
        silo = await self.database_named(tenant.silo_database)
        if silo is self._db:
            return
        async with silo.system_tx() as conn:
            await conn.execute(
                """INSERT INTO tenants (id, slug, name, plan, status) VALUES (%s, %s, %s, %s, 'active')
                   ON CONFLICT (id) DO NOTHING""",
                (tenant.id, tenant.slug, tenant.name, tenant.plan),
            )

    async def anchor_key(self, silo_database: str | None, key: ApiKeyRow) -> None:
        """Copy a key's identity into the silo (references to other rows left out)."""
        silo = await self.database_named(silo_database)
        if silo is self._db:
            return
        async with silo.system_tx() as conn:
            await conn.execute(
                """INSERT INTO api_keys (id, tenant_id, name, key_prefix, key_hash, key_hint, environment, scope, end_user_id)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING""",
                (key.id, key.tenant_id, key.name, key.key_prefix, key.key_hash, key.key_hint, key.environment, key.scope,
                 key.end_user_id),
            )  # fmt: skip
