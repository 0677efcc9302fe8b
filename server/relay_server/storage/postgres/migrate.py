"""Apply ``migrations/NNNN_description.sql`` in order, each exactly once.

* Each file runs in its own transaction together with its row in
  ``schema_migrations``: a failing file leaves no trace and nothing after it runs.
* A file already applied whose bytes changed is an error (``MigrationError``):
  history is append-only; fix forward with a new file.
* Concurrent runners (several server processes starting at once) are
  serialised by a session advisory lock; the second finds nothing to do.
* A file cannot contain statements that refuse to run in a transaction
  (``CREATE INDEX CONCURRENTLY``, ``VACUUM``).

Run as the owner role: it owns every table it creates.  Command line:
``python -m relay_server.storage.postgres.migrate`` (DSNs from settings).
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

APP_ROLE = "relay_app"
# Any constant works; it only has to be the same for every runner.
_LOCK_KEY = 0x52454C4159_4D  # "RELAY" "M"
_NAME_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     INT         PRIMARY KEY,
    name        TEXT        NOT NULL UNIQUE,
    applied_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    checksum    TEXT        NOT NULL
)
"""


class MigrationError(RuntimeError):
    """The migration history and the files on disk disagree, or a file failed."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str  # file stem, e.g. "0001_roles_and_helpers"
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def default_migrations_dir() -> Path:
    # server/relay_server/storage/postgres/migrate.py -> repository root
    return Path(__file__).resolve().parents[4] / "migrations"


def discover(migrations_dir: Path) -> list[Migration]:
    """The migration files in version order; malformed names and gaps are errors."""
    if not migrations_dir.is_dir():
        raise MigrationError(f"no migrations directory at {migrations_dir}")
    found: list[Migration] = []
    for path in sorted(migrations_dir.glob("*.sql")):
        m = _NAME_RE.match(path.name)
        if m is None:
            raise MigrationError(f"migration file name must look like 0001_description.sql: {path.name}")
        found.append(Migration(int(m.group(1)), path.stem, path))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migration files share a version in {migrations_dir}")
    if versions != list(range(1, len(versions) + 1)):
        raise MigrationError(f"migration versions must run 1, 2, 3, ... without gaps: {versions}")
    return found


def apply_migrations(
    owner_dsn: str,
    *,
    migrations_dir: Path | None = None,
    app_password: str | None = None,
) -> list[str]:
    """Apply pending migrations; return the names applied by this call.

    ``app_password``, when given, becomes the password of ``relay_app`` (after
    the migrations, which create the role).
    """
    migrations = discover(migrations_dir or default_migrations_dir())
    applied_now: list[str] = []
    with psycopg.connect(owner_dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            try:
                conn.execute(_CREATE_TABLE)
                rows = conn.execute("SELECT version, name, checksum FROM schema_migrations").fetchall()
            except psycopg.Error as exc:
                raise MigrationError(f"cannot read schema_migrations (is this the owner role?): {exc}") from exc
            applied = {row[0]: (row[1], row[2]) for row in rows}
            _check_history(migrations, applied)
            for migration in migrations:
                if migration.version in applied:
                    continue
                _apply_one(conn, migration)
                applied_now.append(migration.name)
            if app_password is not None:
                set_app_password(conn, app_password)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied_now


def _check_history(migrations: list[Migration], applied: dict[int, tuple[str, str]]) -> None:
    on_disk = {m.version: m for m in migrations}
    for version, (name, checksum) in sorted(applied.items()):
        migration = on_disk.get(version)
        if migration is None:
            raise MigrationError(f"migration {name} was applied but its file is gone")
        if migration.name != name:
            raise MigrationError(f"migration {version} was applied as {name} but the file is now {migration.name}")
        if migration.checksum != checksum:
            raise MigrationError(f"migration {name} changed after it was applied (checksum mismatch)")


def _apply_one(conn: psycopg.Connection, migration: Migration) -> None:
    try:
        with conn.transaction():
            # No parameters: psycopg sends the file as one simple query, so a
            # file may hold many statements and literal % signs.
            conn.execute(migration.sql.encode("utf-8"))
            conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                (migration.version, migration.name, migration.checksum),
            )
    except psycopg.Error as exc:
        raise MigrationError(f"migration {migration.name} failed: {exc}") from exc


def set_app_password(conn: psycopg.Connection, password: str) -> None:
    """Set ``relay_app``'s login password (needs CREATEROLE or superuser)."""
    if not password:
        raise ValueError("the relay_app password must not be empty")
    conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(APP_ROLE), sql.Literal(password)))


def password_from_dsn(dsn: str) -> str | None:
    password = conninfo_to_dict(dsn).get("password")
    return str(password) if password else None


def main(argv: list[str] | None = None) -> int:
    from relay_server.settings import Settings

    parser = argparse.ArgumentParser(description="Apply Relay's database migrations.")
    parser.add_argument("--dsn", help="owner DSN (default: DATABASE_URL)")
    parser.add_argument("--dir", type=Path, help="migrations directory")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    dsn = args.dsn or settings.database_url
    if not dsn:
        parser.error("no DSN: pass --dsn or set DATABASE_URL")
    # The app role's password follows RELAY_APP_DATABASE_URL when it is set.
    app_password = password_from_dsn(settings.app_database_url) if settings.app_database_url else None
    try:
        names = apply_migrations(dsn, migrations_dir=args.dir, app_password=app_password)
    except MigrationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("\n".join(f"applied {n}" for n in names) or "nothing to apply")
    return 0


if __name__ == "__main__":
    sys.exit(main())
