"""Silo placement without a database: the setting's format, which database a tenant's rows go to,
which tenants each database's sweeping workers may take, and the write pause at authentication."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from relay_server.domain.keys import KeyRecord, hash_key, mint_key
from relay_server.errors import ErrorKind, RelayError
from relay_server.pipeline.steps.authenticate import Authenticator
from relay_server.storage.postgres.silos import DataPlane, parse_silo_databases, placement_value, silo_of
from relay_server.tenancy.auth_cache import decode_record, encode_record


class FakeDb:
    """Stands in for a Database: DataPlane only compares and hands these out."""

    def __init__(self, name: str) -> None:
        self.name = name


def test_the_setting_names_silos_and_refuses_what_it_cannot_read() -> None:
    assert parse_silo_databases("") == {}
    assert parse_silo_databases(" eu=postgresql://a@h/eu , us-east=postgresql://b@h/us ") == {
        "eu": "postgresql://a@h/eu", "us-east": "postgresql://b@h/us",
    }  # fmt: skip
    for bad in ("eu", "=postgresql://x", "eu=", "eu=a,eu=b", "e u=postgresql://x"):
        with pytest.raises(ValueError):
            parse_silo_databases(bad)


def test_placement_values_round_trip() -> None:
    assert silo_of(placement_value("eu")) == "eu"
    assert placement_value(None) is None and silo_of(None) is None and silo_of("pool") is None
    assert silo_of("garbage") is None


def _plane(placed: dict[str, str]) -> tuple[DataPlane, Any, Any]:
    pool, eu = FakeDb("pool"), FakeDb("eu")

    async def placement(tenant_id: str) -> str | None:
        return placed.get(tenant_id)

    plane = DataPlane(pool, {"eu": eu}, placement=placement)  # type: ignore[arg-type, dict-item]
    return plane, pool, eu


async def test_each_tenant_resolves_to_its_database_and_writes_are_grouped_by_it() -> None:
    plane, pool, eu = _plane({"ten_b": "eu"})
    assert await plane.database_for("ten_a") is pool
    assert await plane.database_for("ten_b") is eu
    assert await plane.group(["ten_a", "ten_b", "ten_a", "ten_c"]) == {pool: ["ten_a", "ten_c"], eu: ["ten_b"]}


async def test_an_unknown_silo_never_falls_back_to_the_pool() -> None:
    plane, _, _ = _plane({"ten_b": "gone"})
    with pytest.raises(LookupError, match="gone"):
        await plane.database_for("ten_b")


async def test_a_bare_database_is_a_plane_of_one() -> None:
    db = FakeDb("only")
    plane = DataPlane.of(db)  # type: ignore[arg-type]
    assert DataPlane.of(plane) is plane
    assert await plane.database_for("ten_x") is db
    slices = await plane.slices()
    assert [(s.db, s.only, s.exclude) for s in slices] == [(db, None, ())]


async def test_sweeping_workers_take_each_tenant_in_exactly_one_database() -> None:
    plane, pool, eu = _plane({})

    async def placements() -> dict[str, str]:
        return {"ten_b": "eu", "ten_c": "eu"}

    plane.placements = placements  # type: ignore[method-assign]
    slices = await plane.slices()
    assert [(s.db, s.only, s.exclude) for s in slices] == [(pool, None, ("ten_b", "ten_c")), (eu, ("ten_b", "ten_c"), ())]


def _record(secret: str, **kw: Any) -> KeyRecord:
    base: dict[str, Any] = dict(
        key_id="key_1", key_hash=hash_key(secret), key_hint=secret[-4:], tenant_id="ten_1", tenant_status="active",
        tenant_plan="pro", environment="test", scope="inference", status="active",
    )  # fmt: skip
    return KeyRecord(**(base | kw))


class MemoryKeys:
    def __init__(self, record: KeyRecord) -> None:
        self.record = record

    async def find_by_hash(self, key_hash: str) -> KeyRecord | None:
        return self.record if key_hash == self.record.key_hash else None


async def test_a_paused_tenant_gets_503_tenant_moving_with_retry_after_until_the_pause_ends() -> None:
    key = mint_key("test")
    paused = _record(key.secret, writes_paused_until=datetime.now(UTC) + timedelta(seconds=5))
    with pytest.raises(RelayError) as info:
        await Authenticator(MemoryKeys(paused), cache_ttl_s=0).authenticate({"authorization": f"Bearer {key.secret}"})
    err = info.value
    assert err.kind is ErrorKind.TENANT_PROVISIONING and err.kind.http_status == 503
    assert err.code == "tenant_moving" and err.retry_after_s == 1
    # A pause left behind by a mover that died ends by itself.
    over = _record(key.secret, writes_paused_until=datetime.now(UTC) - timedelta(seconds=1))
    principal = await Authenticator(MemoryKeys(over), cache_ttl_s=0).authenticate({"authorization": f"Bearer {key.secret}"})
    assert principal.tenant_id == "ten_1"


def test_the_pause_travels_through_the_shared_key_cache() -> None:
    until = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    record = _record(mint_key("test").secret, writes_paused_until=until)
    assert decode_record(encode_record(record)) == record
    older = encode_record(_record(mint_key("test").secret)).replace(b',"writes_paused_until":null', b"")
    assert decode_record(older).writes_paused_until is None  # records cached before this field still decode
