"""Migrations against a real Postgres: order, idempotence, tamper detection,
rollback of a failing file, concurrent runners, roles and partitions.

Fixtures ``pg_cluster`` and ``pg_db`` come from tests/conftest.py.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from relay_server.storage.postgres.migrate import (
    MigrationError,
    apply_migrations,
    default_migrations_dir,
    discover,
)
from tests.support.pg import PgCluster, TestDatabase

ALL_NAMES = [m.name for m in discover(default_migrations_dir())]


@pytest.fixture
def empty_db(pg_cluster: PgCluster):
    db = pg_cluster.create_empty_database()
    yield db
    pg_cluster.drop_database(db)


@pytest.fixture
def migrations_copy(tmp_path: Path) -> Path:
    target = tmp_path / "migrations"
    shutil.copytree(default_migrations_dir(), target)
    return target


def _scalar(dsn: str, query: str, params: tuple = ()) -> object:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(query, params).fetchone()
        return row[0] if row else None


# --- discovery (no database) -------------------------------------------------


def test_repository_migrations_are_well_formed() -> None:
    assert ALL_NAMES[0] == "0001_roles_and_helpers"
    assert [int(n[:4]) for n in ALL_NAMES] == list(range(1, len(ALL_NAMES) + 1))


@pytest.mark.parametrize(
    "files, message",
    [
        (["0001_a.sql", "0003_c.sql"], "without gaps"),
        (["0001_a.sql", "0001_b.sql"], "share a version"),
        (["0001_a.sql", "2_b.sql"], "0001_description.sql"),
        (["0001_A-b.sql"], "0001_description.sql"),
    ],
)
def test_discover_rejects_bad_file_sets(tmp_path: Path, files: list[str], message: str) -> None:
    for name in files:
        (tmp_path / name).write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=message):
        discover(tmp_path)


def test_discover_rejects_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(MigrationError, match="no migrations directory"):
        discover(tmp_path / "nope")


# --- applying ------------------------------------------------------------------


def test_template_records_every_migration_with_its_checksum(pg_db: TestDatabase) -> None:
    with psycopg.connect(pg_db.owner_dsn) as conn:
        rows = conn.execute("SELECT version, name, checksum FROM schema_migrations ORDER BY version").fetchall()
    on_disk = discover(default_migrations_dir())
    assert rows == [(m.version, m.name, m.checksum) for m in on_disk]


def test_fresh_database_applies_everything_then_nothing(empty_db: TestDatabase) -> None:
    assert apply_migrations(empty_db.owner_dsn) == ALL_NAMES
    assert apply_migrations(empty_db.owner_dsn) == []
    assert _scalar(empty_db.owner_dsn, "SELECT count(*) FROM schema_migrations") == len(ALL_NAMES)


def test_changed_checksum_of_applied_file_is_an_error(empty_db: TestDatabase, migrations_copy: Path) -> None:
    apply_migrations(empty_db.owner_dsn, migrations_dir=migrations_copy)
    target = migrations_copy / "0004_api_keys.sql"
    target.write_text(target.read_text() + "\n-- an innocent-looking edit\n")
    (migrations_copy / f"{len(ALL_NAMES) + 1:04d}_later.sql").write_text("CREATE TABLE later_one (id int);")

    with pytest.raises(MigrationError, match="0004_api_keys changed after it was applied"):
        apply_migrations(empty_db.owner_dsn, migrations_dir=migrations_copy)
    # Nothing after the mismatch ran.
    assert _scalar(empty_db.owner_dsn, "SELECT to_regclass('later_one')::text") is None


def test_applied_file_removed_from_disk_is_an_error(empty_db: TestDatabase, migrations_copy: Path) -> None:
    extra = migrations_copy / f"{len(ALL_NAMES) + 1:04d}_extra.sql"
    extra.write_text("SELECT 1;")
    apply_migrations(empty_db.owner_dsn, migrations_dir=migrations_copy)
    extra.unlink()
    with pytest.raises(MigrationError, match="its file is gone"):
        apply_migrations(empty_db.owner_dsn, migrations_dir=migrations_copy)


def test_new_file_is_applied_alone(empty_db: TestDatabase, migrations_copy: Path) -> None:
    apply_migrations(empty_db.owner_dsn, migrations_dir=migrations_copy)
    name = f"{len(ALL_NAMES) + 1:04d}_add_widgets"
    # A literal % must survive: the file is sent without parameter parsing.
    (migrations_copy / f"{name}.sql").write_text(
        "CREATE TABLE widgets (id int);\nINSERT INTO widgets SELECT 1 WHERE '100%' LIKE '%\\%';\n"
    )
    assert apply_migrations(empty_db.owner_dsn, migrations_dir=migrations_copy) == [name]
    assert _scalar(empty_db.owner_dsn, "SELECT count(*) FROM widgets") == 1


def test_failing_file_rolls_back_whole_and_is_not_recorded(empty_db: TestDatabase, migrations_copy: Path) -> None:
    apply_migrations(empty_db.owner_dsn, migrations_dir=migrations_copy)
    bad = migrations_copy / f"{len(ALL_NAMES) + 1:04d}_bad.sql"
    bad.write_text("CREATE TABLE half_done (id int);\nSELECT 1 / 0;\n")

    with pytest.raises(MigrationError, match="_bad failed: division by zero"):
        apply_migrations(empty_db.owner_dsn, migrations_dir=migrations_copy)
    assert _scalar(empty_db.owner_dsn, "SELECT to_regclass('half_done')::text") is None
    assert _scalar(empty_db.owner_dsn, "SELECT count(*) FROM schema_migrations") == len(ALL_NAMES)

    # Never recorded, so fixing the file in place is allowed.
    bad.write_text("CREATE TABLE half_done (id int);\n")
    assert apply_migrations(empty_db.owner_dsn, migrations_dir=migrations_copy) == [bad.stem]


def test_concurrent_runners_apply_each_file_once(empty_db: TestDatabase) -> None:
    results: list[list[str]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(3)

    def run() -> None:
        start.wait()
        try:
            results.append(apply_migrations(empty_db.owner_dsn))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert sorted(results, key=len) == [[], [], ALL_NAMES]


def test_app_password_is_set_and_used(empty_db: TestDatabase, pg_cluster: PgCluster) -> None:
    apply_migrations(empty_db.owner_dsn, app_password="s3cret-but-not-really")
    try:
        dsn = pg_cluster.server.dsn_for(empty_db.name, user="relay_app", password="s3cret-but-not-really")
        assert _scalar(dsn, "SELECT current_user") == "relay_app"
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(pg_cluster.server.dsn_for(empty_db.name, user="relay_app", password="wrong")).close()
    finally:
        # relay_app is cluster-wide: put the session's password back.
        apply_migrations(empty_db.owner_dsn, app_password=pg_cluster.app_password)


def test_without_vector_privilege_the_schema_has_no_embedding_columns(pg_cluster: PgCluster) -> None:
    db = pg_cluster.create_empty_database(with_vector=False)
    try:
        # relay_owner is not a superuser and pgvector is not "trusted".
        assert apply_migrations(db.owner_dsn) == ALL_NAMES
        assert _scalar(db.owner_dsn, "SELECT relay_semantic_cache_available()") is False
        assert _scalar(db.owner_dsn, "SELECT count(*) FROM pg_extension WHERE extname = 'vector'") == 0
        embedding_columns = "SELECT count(*) FROM information_schema.columns WHERE column_name = 'embedding'"
        assert _scalar(db.owner_dsn, embedding_columns) == 0
    finally:
        pg_cluster.drop_database(db)


def test_with_vector_the_embedding_columns_and_hnsw_indexes_exist(pg_db: TestDatabase) -> None:
    with psycopg.connect(pg_db.owner_dsn) as conn:
        cols = conn.execute(
            "SELECT table_name, udt_name FROM information_schema.columns WHERE column_name = 'embedding' ORDER BY 1"
        ).fetchall()
        assert cols == [("response_cache", "vector"), ("thread_messages", "vector")]
        indexes = conn.execute(
            "SELECT indexname FROM pg_indexes WHERE indexdef LIKE '%USING hnsw%' ORDER BY 1"
        ).fetchall()
        assert indexes == [("idx_response_cache_embedding",), ("idx_thread_messages_embedding",)]
        assert conn.execute("SELECT relay_semantic_cache_available()").fetchone() == (True,)


# --- roles -----------------------------------------------------------------------


def test_relay_app_is_not_owner_superuser_or_bypassrls(pg_db: TestDatabase) -> None:
    with psycopg.connect(pg_db.owner_dsn) as conn:
        role = conn.execute(
            "SELECT rolsuper, rolbypassrls, rolcanlogin FROM pg_roles WHERE rolname = 'relay_app'"
        ).fetchone()
        assert role == (False, False, True)
        owned = conn.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND pg_get_userbyid(c.relowner) = 'relay_app'"
        ).fetchone()
        assert owned == (0,)
        # The migrating role owns the tables.
        owner = conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'api_keys'").fetchone()
        assert owner == ("relay_owner",)


def test_migrations_refuse_to_run_as_relay_app(pg_cluster: PgCluster, empty_db: TestDatabase) -> None:
    # relay_app may not create tables at all, so it fails before any file runs.
    with pytest.raises(MigrationError, match="permission denied for schema public"):
        apply_migrations(pg_cluster.app_dsn(empty_db.name))
    assert _scalar(empty_db.owner_dsn, "SELECT to_regclass('schema_migrations')::text") is None


# --- seeds -------------------------------------------------------------------------


def test_seeded_catalog_plans_and_permissions(pg_db: TestDatabase) -> None:
    with psycopg.connect(pg_db.owner_dsn) as conn:
        providers = dict(conn.execute("SELECT id, api FROM providers").fetchall())
        assert providers == {p: p for p in ("openai", "anthropic", "mistral", "groq", "test")}
        row = conn.execute(
            "SELECT provider_id, relay_name, input_cost_per_1m, output_cost_per_1m, context_window FROM models "
            "WHERE id = 'claude-3-5-sonnet-20241022'"
        ).fetchone()
        assert row is not None and row[:2] == ("anthropic", "claude-3-5-sonnet")
        assert (float(row[2]), float(row[3]), row[4]) == (3.0, 15.0, 200000)
        kinds = dict(conn.execute("SELECT relay_name, kind FROM models").fetchall())
        assert kinds["gpt-3.5-turbo-instruct"] == "completion"
        assert kinds["text-embedding-3-small"] == "embedding"
        assert kinds["gpt-5.5"] == "chat"
        assert conn.execute(
            "SELECT limit_value FROM quota_definitions WHERE plan = 'free' AND resource = 'rpm'"
        ).fetchone() == (60,)
        assert conn.execute("SELECT count(DISTINCT plan) FROM quota_definitions").fetchone() == (4,)
        # Every plan has a row for every feature.
        assert conn.execute("SELECT count(*) FROM plan_features").fetchone() == (4 * 7,)
        free_byok = conn.execute("SELECT enabled FROM plan_features WHERE plan = 'free' AND feature = 'byok'")
        assert free_byok.fetchone() == (False,)
        assert conn.execute("SELECT 1 FROM permissions WHERE id = 'api_keys:create'").fetchone() == (1,)


def test_catalog_rejects_bad_rows(pg_db: TestDatabase) -> None:
    with psycopg.connect(pg_db.owner_dsn) as conn:
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("INSERT INTO providers (id, name, api, base_url) VALUES ('x', 'X', 'carrier_pigeon', 'x://')")
        conn.rollback()
        with pytest.raises(psycopg.errors.CheckViolation):
            # An embedding model must say its dimensions.
            conn.execute(
                "INSERT INTO models (id, provider_id, relay_name, provider_name, display_name, kind, "
                "input_cost_per_1m, output_cost_per_1m, context_window) "
                "VALUES ('e', 'openai', 'e', 'e', 'E', 'embedding', 0.1, 0, 8191)"
            )
        conn.rollback()
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("INSERT INTO tenants (id, slug, name, status) VALUES ('t', 't', 'T', 'zombie')")


# --- requests partitions -----------------------------------------------------------


def _seed_tenant_and_key(conn: psycopg.Connection, tenant: str) -> str:
    conn.execute("INSERT INTO tenants (id, slug, name, status) VALUES (%s, %s, %s, 'active')", (tenant, tenant, tenant))
    key_id = f"key_{tenant}"
    conn.execute(
        "INSERT INTO api_keys (id, tenant_id, name, key_prefix, key_hash, key_hint) "
        "VALUES (%s, %s, 'k', 'rly_live_', %s, 'abcd')",
        (key_id, tenant, f"hash-{tenant}"),
    )
    return key_id


def _insert_request(conn: psycopg.Connection, req_id: str, tenant: str, key_id: str, at: datetime) -> str:
    row = conn.execute(
        "INSERT INTO requests (id, created_at, tenant_id, api_key_id, request_type, started_at, status) "
        "VALUES (%s, %s, %s, %s, 'chat', %s, 'success') RETURNING tableoid::regclass::text",
        (req_id, at, tenant, key_id, at),
    ).fetchone()
    assert row is not None
    return str(row[0])


def test_current_and_next_month_partitions_and_default_exist(pg_db: TestDatabase) -> None:
    now = datetime.now(UTC)
    nxt = datetime(now.year + (now.month == 12), now.month % 12 + 1, 1, tzinfo=UTC)
    expected = {"requests_default", f"requests_y{now:%Y}m{now:%m}", f"requests_y{nxt:%Y}m{nxt:%m}"}
    with psycopg.connect(pg_db.owner_dsn) as conn:
        query = "SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = 'requests'::regclass"
        parts = {r[0] for r in conn.execute(query)}
        assert expected <= parts
        key = _seed_tenant_and_key(conn, "ten_p")
        assert _insert_request(conn, "req_now", "ten_p", key, now) == f"requests_y{now:%Y}m{now:%m}"


def test_far_future_request_lands_in_default_then_moves_to_its_partition(pg_db: TestDatabase) -> None:
    future = datetime(2099, 5, 3, 12, 0, tzinfo=UTC)
    with psycopg.connect(pg_db.owner_dsn) as conn:
        key = _seed_tenant_and_key(conn, "ten_f")
        conn.commit()
        assert _insert_request(conn, "req_future", "ten_f", key, future) == "requests_default"
        # Same id and created_at again: the primary key catches the replay.
        with pytest.raises(psycopg.errors.UniqueViolation):
            _insert_request(conn, "req_future", "ten_f", key, future)
        conn.rollback()

        _insert_request(conn, "req_future", "ten_f", key, future)
        assert conn.execute("SELECT relay_create_request_partition('2099-05-20')").fetchone() == ("requests_y2099m05",)
        where = conn.execute("SELECT tableoid::regclass::text FROM requests WHERE id = 'req_future'").fetchone()
        assert where == ("requests_y2099m05",)
        assert conn.execute("SELECT count(*) FROM requests_default").fetchone() == (0,)
        # Idempotent, and the new partition carries RLS like the others.
        assert conn.execute("SELECT relay_create_request_partition('2099-05-01')").fetchone() == ("requests_y2099m05",)
        rls = conn.execute(
            "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE relname = 'requests_y2099m05'"
        ).fetchone()
        assert rls == (True, True)
        # Boundaries are UTC months: the last microsecond of May stays in May.
        edge = datetime(2099, 5, 31, 23, 59, 59, 999999, tzinfo=UTC)
        assert _insert_request(conn, "req_edge", "ten_f", key, edge) == "requests_y2099m05"
        assert _insert_request(conn, "req_june", "ten_f", key, datetime(2099, 6, 1, tzinfo=UTC)) == "requests_default"


def test_request_rejects_unknown_status_and_foreign_key(pg_db: TestDatabase) -> None:
    with psycopg.connect(pg_db.owner_dsn) as conn:
        key = _seed_tenant_and_key(conn, "ten_r")
        conn.commit()
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(
                "INSERT INTO requests (id, tenant_id, api_key_id, request_type, started_at, status) "
                "VALUES ('r1', 'ten_r', %s, 'chat', now(), 'mystery')",
                (key,),
            )
        conn.rollback()
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute(
                "INSERT INTO requests (id, tenant_id, api_key_id, request_type, started_at, status) "
                "VALUES ('r2', 'ten_r', 'key_nobody', 'chat', now(), 'success')"
            )


# --- the embedded server itself ------------------------------------------------------


def test_embedded_server_lifecycle() -> None:
    from relay_server.storage.postgres.embedded import (
        attach_embedded_postgres,
        start_embedded_postgres,
        stop_embedded_postgres,
    )

    data_dir = Path(tempfile.mkdtemp(prefix="relay-pg-life-"))
    try:
        server = start_embedded_postgres(data_dir, durable=False)
        assert server.is_running()
        with psycopg.connect(server.dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)")
            assert conn.execute("SELECT default_version FROM pg_available_extensions WHERE name = 'vector'").fetchone()
        # Starting again returns the running server instead of a second one.
        assert start_embedded_postgres(data_dir) == server
        assert attach_embedded_postgres(data_dir) == server
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(server.dsn_for("postgres", password="wrong")).close()

        assert stop_embedded_postgres(data_dir) is True  # from "another process": by data dir only
        assert not server.is_running()
        assert attach_embedded_postgres(data_dir) is None
        assert server.stop() is False

        restarted = start_embedded_postgres(data_dir, durable=False)
        with psycopg.connect(restarted.dsn) as conn:
            assert conn.execute("SELECT v FROM kept").fetchone() == (42,)
        assert restarted.stop() is True
    finally:
        stop_embedded_postgres(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)
