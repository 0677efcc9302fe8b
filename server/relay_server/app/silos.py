"""The data plane's databases: the pool and the silos named by ``RELAY_SILO_DATABASES``."""

from __future__ import annotations

from psycopg.conninfo import conninfo_to_dict

from relay_server.settings import Settings
from relay_server.storage.postgres.pool import Database, app_dsn_from_owner
from relay_server.storage.postgres.silos import DataPlane, parse_silo_databases


def silo_database(settings: Settings, owner_dsn: str, name: str) -> Database:
    """A silo's pools: its ``relay_app`` DSN reuses the pool's ``relay_app`` password (one role per server)."""
    password = conninfo_to_dict(settings.app_database_url).get("password") if settings.app_database_url else None
    app_password = str(password) if password is not None else None
    return Database(
        owner_dsn, app_dsn_from_owner(owner_dsn, app_password),
        min_size=1, max_size=settings.db_pool_max, name=f"relay-silo-{name}",
    )  # fmt: skip


def build_data_plane(settings: Settings, pool: Database) -> DataPlane:
    """Not opened yet (``await plane.open()``); placement is bound by the tenancy capability."""
    silos = {
        name: silo_database(settings, dsn, name) for name, dsn in parse_silo_databases(settings.silo_databases).items()
    }
    return DataPlane(pool, silos)


async def open_data_plane(settings: Settings, pool: Database) -> DataPlane:
    """For commands outside the server (spool replay, export): the plane with its placement lookup, opened."""
    from relay_server.tenancy.placement import PlacementReader  # noqa: PLC0415

    plane = build_data_plane(settings, pool)
    plane.bind(PlacementReader(pool, ttl_s=settings.config_cache_ttl_s).silo)
    await plane.open()
    return plane
