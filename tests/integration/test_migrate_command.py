"""`relay migrate`, as the Kubernetes migrations Job runs it: the owner DSN applies
every migration once, and relay_app gets the password RELAY_APP_DATABASE_URL names
(the one the gateway then logs in with)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from relay_server.storage.postgres.migrate import APP_ROLE, password_from_dsn
from tests.support.pg import PgCluster

REPO = Path(__file__).resolve().parents[2]


def _migrate(owner_dsn: str, app_dsn: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": owner_dsn, "RELAY_APP_DATABASE_URL": app_dsn}
    return subprocess.run([sys.executable, "-m", "relay_server", "migrate"], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def _can_log_in(dsn: str) -> bool:
    try:
        with psycopg.connect(dsn, connect_timeout=10) as conn:
            return conn.execute("SELECT current_user").fetchone() == (APP_ROLE,)
    except psycopg.OperationalError:
        return False


@pytest.mark.timeout(600)
def test_relay_migrate_applies_everything_once_and_sets_relay_apps_password(pg_cluster: PgCluster) -> None:
    db = pg_cluster.create_empty_database()
    new_app_dsn = make_conninfo(db.app_dsn, password="k8s-" + secrets.token_urlsafe(12))
    try:
        first = _migrate(db.owner_dsn, new_app_dsn)
        assert first.returncode == 0, first.stderr
        assert first.stdout.startswith("applied ") and "0001_" in first.stdout
        assert password_from_dsn(new_app_dsn) not in first.stdout + first.stderr
        assert _can_log_in(new_app_dsn)
        assert not _can_log_in(db.app_dsn)  # the old password no longer works

        # A second run (a re-created Job) applies nothing and puts the session's password back.
        second = _migrate(db.owner_dsn, db.app_dsn)
        assert (second.returncode, second.stdout.strip()) == (0, "applied 0 migration(s)"), second.stderr
        assert _can_log_in(db.app_dsn)
    finally:
        # relay_app is shared by every test database of this session.
        with psycopg.connect(pg_cluster.superuser_dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(APP_ROLE), sql.Literal(pg_cluster.app_password)))
        pg_cluster.drop_database(db)
