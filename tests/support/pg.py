"""Real Postgres for tests: one embedded server per session, a migrated
template database built once, and a fresh clone of it per test (or module).

The set-up mirrors production roles rather than the embedded superuser:

* ``relay_owner`` (LOGIN CREATEROLE, not superuser) runs the migrations and
  owns every table, so FORCE ROW LEVEL SECURITY and the owner policy are
  exercised for real (a superuser would bypass them).
* pgvector is created by the superuser in the template beforehand, as a DBA
  would on a managed server (the extension is not "trusted").
* ``relay_app`` gets a known password, so app DSNs authenticate for real.

Plain functions and classes; the pytest fixtures live in tests/conftest.py.
"""

from __future__ import annotations

import itertools
import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from relay_server.storage.postgres.embedded import EmbeddedPostgres, start_embedded_postgres
from relay_server.storage.postgres.migrate import APP_ROLE, apply_migrations

OWNER_ROLE = "relay_owner"
TEMPLATE_DB = "relay_template"


@dataclass(frozen=True)
class TestDatabase:
    """One throw-away database: DSNs for each role."""

    __test__ = False  # not a pytest test class

    name: str
    owner_dsn: str
    app_dsn: str
    superuser_dsn: str


@dataclass
class PgCluster:
    """The session's embedded server, with the migrated template database."""

    server: EmbeddedPostgres
    owner_password: str = field(repr=False)
    app_password: str = field(repr=False)
    base_dir: Path
    _counter: itertools.count = field(default_factory=lambda: itertools.count(1), repr=False)

    def superuser_dsn(self, database: str = "postgres") -> str:
        return self.server.dsn_for(database)

    def owner_dsn(self, database: str) -> str:
        return self.server.dsn_for(database, user=OWNER_ROLE, password=self.owner_password)

    def app_dsn(self, database: str) -> str:
        return self.server.dsn_for(database, user=APP_ROLE, password=self.app_password)

    def _handle(self, name: str) -> TestDatabase:
        return TestDatabase(name, self.owner_dsn(name), self.app_dsn(name), self.superuser_dsn(name))

    def _new_name(self, prefix: str) -> str:
        return f"{prefix}_{os.getpid()}_{next(self._counter)}"

    def create_database(self, prefix: str = "relay_test") -> TestDatabase:
        """A fresh, fully migrated database cloned from the template (fast: a file copy)."""
        name = self._new_name(prefix)
        with psycopg.connect(self.superuser_dsn(), autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {} OWNER {} STRATEGY FILE_COPY").format(
                    sql.Identifier(name), sql.Identifier(TEMPLATE_DB), sql.Identifier(OWNER_ROLE)
                )
            )
        return self._handle(name)

    def create_empty_database(self, prefix: str = "relay_empty", *, with_vector: bool = True) -> TestDatabase:
        """A database owned by relay_owner with no migrations applied."""
        name = self._new_name(prefix)
        _create_owned_database(self.superuser_dsn(), name, with_vector=with_vector)
        return self._handle(name)

    def drop_database(self, db: TestDatabase | str) -> None:
        name = db if isinstance(db, str) else db.name
        with psycopg.connect(self.superuser_dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def stop(self) -> None:
        """Stop the server and delete its files."""
        self.server.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)


def start_cluster(base_dir: Path | None = None) -> PgCluster:
    """Start an embedded server, create the roles and build the migrated template."""
    base = Path(base_dir) if base_dir else Path(tempfile.mkdtemp(prefix="relay-pg-"))
    # wal_level=logical: a tenant's move to a silo replicates its rows (tests/e2e/test_silo_move.py).
    server = start_embedded_postgres(
        base / "pg", durable=False, settings={"max_connections": "200", "wal_level": "logical", "max_replication_slots": "20"}
    )
    owner_password = secrets.token_urlsafe(16)
    app_password = secrets.token_urlsafe(16)
    try:
        with psycopg.connect(server.dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN CREATEROLE PASSWORD {}").format(
                    sql.Identifier(OWNER_ROLE), sql.Literal(owner_password)
                )
            )
        _create_owned_database(server.dsn, TEMPLATE_DB, with_vector=True)
        apply_migrations(
            server.dsn_for(TEMPLATE_DB, user=OWNER_ROLE, password=owner_password), app_password=app_password
        )
    except BaseException:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
        raise
    return PgCluster(server=server, owner_password=owner_password, app_password=app_password, base_dir=base)


def _create_owned_database(superuser_dsn: str, name: str, *, with_vector: bool) -> None:
    with psycopg.connect(superuser_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE template0").format(
                sql.Identifier(name), sql.Identifier(OWNER_ROLE)
            )
        )
    if with_vector:
        db_dsn = make_conninfo(superuser_dsn, dbname=name)
        with psycopg.connect(db_dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
