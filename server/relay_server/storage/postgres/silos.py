"""Where a tenant's data plane lives: the shared (pool) database or a silo.

A tenant's *placement* is the ``tenant_config`` entry ``data_placement``
(``silo:<name>``; absent means the pool), written only by
``relay tenants move-to-silo`` (``tenancy/silo_move.py``).  The name is
resolved through the server's ``RELAY_SILO_DATABASES`` setting
(``name=owner_dsn,...``), so no DSN — a secret — is stored in a table.

The control plane stays in the pool for every tenant: tenants, users, roles,
API keys (authentication must find a key before it knows the tenant), audit
log, configuration, catalog, credentials and jobs.  The tables below are the
data plane that moves; every store that reads or writes them asks
``DataPlane`` for the tenant's database, and the workers that sweep them
(usage rollup, billing) run over every database, each taking only the
tenants placed there.

``DataPlane`` does not decide placement itself: the app passes it a
``placement(tenant_id) -> silo name | None`` callable (the tenant-policy
cache, ``tenancy/placement.py``), so a move is seen by every worker when the
invalidation bus delivers it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

from relay_server.storage.postgres.pool import Conn, Database

PLACEMENT_KEY = "data_placement"
PAUSE_KEY = "write_paused_until"
SILO_PREFIX = "silo:"
SYSTEM_KEYS = frozenset({PLACEMENT_KEY, PAUSE_KEY})  # tenant_config entries only the move writes

# The tables holding a tenant's request data, parents before children.  These
# move to a silo; everything else stays in the pool.
DATA_PLANE_TABLES: tuple[str, ...] = (
    "requests",
    "usage_rollup_pending",
    "usage_daily",
    "usage_daily_model",
    "billing_periods",
    "billing_line_items",
)

Placement = Callable[[str], Awaitable[str | None]]


def parse_silo_databases(raw: str) -> dict[str, str]:
    """``name=dsn,name2=dsn2`` → ``{name: dsn}``; empty when unset."""
    silos: dict[str, str] = {}
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        name, sep, dsn = part.partition("=")
        name, dsn = name.strip(), dsn.strip()
        if not sep or not name or not dsn or not name.replace("_", "").replace("-", "").isalnum():
            raise ValueError("RELAY_SILO_DATABASES must look like name=postgresql://...,name2=postgresql://...")
        if name in silos:
            raise ValueError(f"RELAY_SILO_DATABASES names silo `{name}` twice")
        silos[name] = dsn
    return silos


def placement_value(silo: str | None) -> str | None:
    return f"{SILO_PREFIX}{silo}" if silo else None


def silo_of(value: str | None) -> str | None:
    """The silo name in a ``data_placement`` value (None: the pool)."""
    if not value or value == "pool":
        return None
    return value[len(SILO_PREFIX) :] if value.startswith(SILO_PREFIX) else None


@dataclass(frozen=True, slots=True)
class Slice:
    """One database and which tenants' rows a sweeping worker may take there."""

    db: Database
    only: tuple[str, ...] | None  # a silo: just the tenants placed in it
    exclude: tuple[str, ...]  # the pool: every tenant except those placed in silos


class DataPlane:
    def __init__(
        self,
        pool: Database,
        silos: Mapping[str, Database] | None = None,
        *,
        placement: Placement | None = None,
    ) -> None:
        self.pool = pool
        self._silos = dict(silos or {})
        self._placement = placement

    @classmethod
    def of(cls, db: Database | DataPlane) -> DataPlane:
        """Stores accept a bare ``Database`` (one database, no silos) or the app's plane."""
        return db if isinstance(db, DataPlane) else cls(db)

    @property
    def silo_names(self) -> list[str]:
        return sorted(self._silos)

    def bind(self, placement: Placement) -> None:
        """Set the placement lookup (the app builds it after the tenancy capability)."""
        self._placement = placement

    def silo(self, name: str) -> Database:
        db = self._silos.get(name)
        if db is None:
            # A tenant placed in a database this server does not know must never
            # silently fall back to the pool: its rows would be split.
            raise LookupError(f"silo database `{name}` is not configured on this server (RELAY_SILO_DATABASES)")
        return db

    async def database_for(self, tenant_id: str) -> Database:
        if not self._silos or self._placement is None:
            return self.pool
        name = await self._placement(tenant_id)
        return self.silo(name) if name else self.pool

    @asynccontextmanager
    async def tenant_tx(self, tenant_id: str) -> AsyncIterator[Conn]:
        """``tenant_tx`` in the tenant's database (row-level security holds in a silo too)."""
        db = await self.database_for(tenant_id)
        async with db.tenant_tx(tenant_id) as conn:
            yield conn

    async def group(self, tenant_ids: Iterable[str]) -> dict[Database, list[str]]:
        """Tenants by the database that holds them (for batched writes)."""
        out: dict[Database, list[str]] = {}
        for tenant_id in dict.fromkeys(tenant_ids):
            out.setdefault(await self.database_for(tenant_id), []).append(tenant_id)
        return out

    async def slices(self) -> list[Slice]:
        """Every database with the tenants it is authoritative for (workers sweep these)."""
        if not self._silos:
            return [Slice(self.pool, None, ())]
        placed = await self.placements()
        moved = tuple(sorted(placed))
        out = [Slice(self.pool, None, moved)]
        for name, db in sorted(self._silos.items()):
            out.append(Slice(db, tuple(sorted(t for t, s in placed.items() if s == name)), ()))
        return out

    async def placements(self) -> dict[str, str]:
        """tenant → silo name, for every tenant placed in a silo (read from the pool)."""
        async with self.pool.system_tx() as conn:
            rows = await (
                await conn.execute("SELECT tenant_id, value FROM tenant_config WHERE key = %s", (PLACEMENT_KEY,))
            ).fetchall()
        return {r["tenant_id"]: name for r in rows if (name := silo_of(r["value"]))}

    async def open(self) -> None:
        await asyncio.gather(*(db.open() for db in self._silos.values()))

    async def close(self) -> None:
        for db in self._silos.values():
            await db.close()
