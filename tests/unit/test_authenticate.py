"""Authentication rules, against an in-memory key store implementing the KeyStore protocol."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from relay_server.domain.keys import KeyRecord, hash_key, mint_key
from relay_server.errors import ErrorKind, RelayError
from relay_server.pipeline.steps.authenticate import Authenticator


class MemoryKeys:
    def __init__(self) -> None:
        self.records: dict[str, KeyRecord] = {}
        self.lookups = 0

    async def find_by_hash(self, key_hash: str) -> KeyRecord | None:
        self.lookups += 1
        return self.records.get(key_hash)


def _record(secret: str, **kw) -> KeyRecord:
    base = dict(
        key_id="key_1", key_hash=hash_key(secret), key_hint=secret[-4:], tenant_id="ten_1", tenant_status="active",
        tenant_plan="pro", environment="test", scope="inference", status="active",
    )
    base.update(kw)
    return KeyRecord(**base)


@pytest.fixture
def store() -> MemoryKeys:
    return MemoryKeys()


def _md(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def _fails(auth: Authenticator, md: dict[str, str]) -> RelayError:
    with pytest.raises(RelayError) as info:
        await auth.authenticate(md)
    return info.value


def test_minted_keys_have_the_documented_shape() -> None:
    key = mint_key("live")
    assert key.secret.startswith("rly_live_sk_") and len(key.secret) == len("rly_live_sk_") + 43
    assert key.key_hash == hash_key(key.secret) and key.key_hint == key.secret[-4:]
    assert key.secret not in repr(key)
    assert mint_key("test").secret != mint_key("test").secret


async def test_valid_key_resolves_to_its_tenant(store: MemoryKeys) -> None:
    key = mint_key("test")
    store.records[key.key_hash] = _record(key.secret)
    principal = await Authenticator(store).authenticate(_md(key.secret))
    assert (principal.tenant_id, principal.is_test, principal.key_hint) == ("ten_1", True, key.key_hint)


@pytest.mark.parametrize("md", [{}, {"authorization": "Basic abc"}, {"authorization": "Bearer "}])
async def test_missing_credentials_are_401(store: MemoryKeys, md: dict[str, str]) -> None:
    assert (await _fails(Authenticator(store), md)).http_status == 401


async def test_malformed_and_unknown_keys_are_401_without_echoing_the_key(store: MemoryKeys) -> None:
    auth = Authenticator(store)
    err = await _fails(auth, _md("sk-openai-style-key"))
    assert err.kind is ErrorKind.INVALID_API_KEY and store.lookups == 0  # malformed: no database trip
    unknown = mint_key("live").secret
    err = await _fails(auth, _md(unknown))
    assert err.http_status == 401 and unknown not in err.message and unknown[-4:] in err.message


@pytest.mark.parametrize(
    ("overrides", "status"),
    [
        ({"status": "revoked"}, 401),
        ({"expires_at": datetime.now(UTC) - timedelta(seconds=1)}, 401),
        ({"tenant_status": "deleted"}, 401),
        ({"tenant_status": "suspended"}, 402),
        ({"tenant_status": "expired"}, 402),
        ({"tenant_status": "provisioning"}, 503),
    ],
)
async def test_key_and_tenant_states(store: MemoryKeys, overrides: dict, status: int) -> None:
    key = mint_key("test")
    store.records[key.key_hash] = _record(key.secret, **overrides)
    assert (await _fails(Authenticator(store), _md(key.secret))).http_status == status


async def test_rotated_key_works_during_its_grace_period(store: MemoryKeys) -> None:
    key = mint_key("live")
    later = datetime.now(UTC) + timedelta(minutes=5)
    store.records[key.key_hash] = _record(key.secret, status="revoked", grace_expires_at=later)
    assert (await Authenticator(store).authenticate(_md(key.secret))).key_id == "key_1"


async def test_cache_hits_skip_the_store_and_purge_forces_a_lookup(store: MemoryKeys) -> None:
    now = [0.0]
    key = mint_key("test")
    store.records[key.key_hash] = _record(key.secret)
    auth = Authenticator(store, cache_ttl_s=5, clock=lambda: now[0])
    await auth.authenticate(_md(key.secret))
    await auth.authenticate(_md(key.secret))
    assert store.lookups == 1
    store.records[key.key_hash] = _record(key.secret, status="revoked")
    auth.purge(key.key_hash)
    assert (await _fails(auth, _md(key.secret))).http_status == 401
    now[0] = 10.0
    assert store.lookups == 2


async def test_suspended_message_points_at_billing(store: MemoryKeys) -> None:
    key = mint_key("test")
    store.records[key.key_hash] = _record(key.secret, tenant_status="suspended")
    err = await _fails(Authenticator(store), _md(key.secret))
    assert err.kind is ErrorKind.TENANT_SUSPENDED and "billing" in err.message


def test_x_api_key_is_accepted_when_there_is_no_authorization_header() -> None:
    from relay_server.pipeline.steps.authenticate import bearer_token

    assert bearer_token({"x-api-key": " rly_test_sk_abc "}) == "rly_test_sk_abc"
    assert bearer_token({"authorization": "Bearer rly_live_sk_x", "x-api-key": "other"}) == "rly_live_sk_x"
