"""The two Postgres connection pools, opened once at start-up and passed in.

* ``system`` connects as the owner role.  It sees every row (the owner has an
  explicit ``owner_access`` policy): workers, platform admin, and the API-key
  lookup by hash, which happens before the tenant is known.
* ``app`` connects as ``relay_app``.  Every use goes through ``tenant_tx``,
  which sets ``app.tenant_id`` for that transaction only, so row-level
  security confines the transaction to one tenant.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from psycopg import AsyncConnection
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import set_json_dumps
from psycopg_pool import AsyncConnectionPool

from relay_server.storage.postgres.migrate import APP_ROLE

Conn = AsyncConnection[DictRow]


def _json_dumps(value: Any) -> bytes:
    # Every request-log row carries its metadata as jsonb: orjson is ~20x faster than the stdlib
    # encoder psycopg uses by default.  Non-string keys become strings, as the stdlib does.
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)


set_json_dumps(_json_dumps)  # process-wide: every Json/Jsonb parameter Relay sends


def app_dsn_from_owner(owner_dsn: str, password: str | None = None) -> str:
    """The ``relay_app`` DSN on the same server and database as ``owner_dsn``.

    Without ``password`` the owner's password is reused: the convention when
    the migrator set ``relay_app``'s password to it (what ``make up`` does).
    The process holds the owner DSN anyway, so this shares no new secret;
    production sets ``RELAY_APP_DATABASE_URL`` explicitly.
    """
    params: dict[str, Any] = {"user": APP_ROLE}
    if password is not None:
        params["password"] = password
    return make_conninfo(owner_dsn, **params)


class Database:
    """Owner (``system``) and ``relay_app`` (``app``) pools for one database."""

    def __init__(
        self,
        owner_dsn: str,
        app_dsn: str | None = None,
        *,
        min_size: int = 1,
        max_size: int = 10,
        name: str = "relay",
        transaction_pooling: bool = False,
    ) -> None:
        if not owner_dsn:
            raise ValueError("an owner DSN is required")
        app_dsn = app_dsn or app_dsn_from_owner(owner_dsn)
        if conninfo_to_dict(app_dsn).get("user") == conninfo_to_dict(owner_dsn).get("user"):
            # The owner is not confined by tenant_isolation: running tenant
            # queries as it would silently turn row-level security off.
            raise ValueError("the app DSN must use a different role from the owner DSN")
        self._owner_dsn = owner_dsn  # the job queue opens its own pool on it
        # autocommit: transactions are always explicit (tenant_tx / system_tx).
        kwargs: dict[str, Any] = {"autocommit": True, "row_factory": dict_row}
        if transaction_pooling:
            # Behind PgBouncer in transaction mode consecutive transactions may land on
            # different server connections: a statement psycopg prepared on one is unknown
            # on the next.  Tenant scoping needs nothing else (tenant_tx's setting is
            # transaction-local).
            kwargs["prepare_threshold"] = None
        self.system: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            owner_dsn,
            min_size=min_size,
            max_size=max_size,
            kwargs={**kwargs, "application_name": f"{name}-system"},
            open=False,
            name=f"{name}-system",
        )
        self.app: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            app_dsn,
            min_size=min_size,
            max_size=max_size,
            kwargs={**kwargs, "application_name": f"{name}-app"},
            open=False,
            name=f"{name}-app",
        )

    @property
    def owner_dsn(self) -> str:
        """For components that keep a pool of their own as the owner (the job worker)."""
        return self._owner_dsn

    @classmethod
    def from_settings(cls, settings: Any) -> Database:
        """Build from ``relay_server.settings.Settings`` (not opened yet)."""
        return cls(
            settings.database_url,
            settings.app_database_url or None,
            min_size=settings.db_pool_min,
            max_size=settings.db_pool_max,
            transaction_pooling=settings.db_transaction_pooling,
        )

    async def open(self, timeout: float = 30.0) -> None:
        """Open both pools; fail (rather than limp on) if Postgres is unreachable."""
        await self.system.open(wait=True, timeout=timeout)
        try:
            await self.app.open(wait=True, timeout=timeout)
        except BaseException:
            await self.system.close()
            raise

    async def close(self) -> None:
        await self.app.close()
        await self.system.close()

    async def __aenter__(self) -> Database:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @asynccontextmanager
    async def tenant_tx(self, tenant_id: str) -> AsyncIterator[Conn]:
        """A transaction as ``relay_app`` that sees only ``tenant_id``'s rows.

        Commits when the block ends, rolls back if it raises.  The setting is
        transaction-local, so the pooled connection carries nothing over.
        """
        if not isinstance(tenant_id, str) or not tenant_id:
            raise ValueError("tenant_tx needs a non-empty tenant id")
        async with self.app.connection() as conn, conn.transaction():
            await conn.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant_id,))
            yield conn

    @asynccontextmanager
    async def system_tx(self) -> AsyncIterator[Conn]:
        """A transaction as the owner: every tenant's rows.  Not for request handling."""
        async with self.system.connection() as conn, conn.transaction():
            yield conn
