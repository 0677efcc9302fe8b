"""Tenancy rules that need no services: key settings, config values, JWTs,
principals' tenant scope, client IPs, cache records and the last-used batch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from relay_server.api.admin_support import client_ip, decode_cursor, paged, parse_proxies
from relay_server.api.pagination import encode_token
from relay_server.domain.keys import KeyRecord, hash_key, mint_key
from relay_server.errors import ErrorKind, RelayError
from relay_server.pipeline.steps.authenticate import Authenticator
from relay_server.tenancy import key_rules, tokens
from relay_server.tenancy.auth_cache import decode_record, encode_record
from relay_server.tenancy.config import parse_config, validate_entry
from relay_server.tenancy.last_used import LastUsedRecorder
from relay_server.tenancy.rbac import ALL_PERMISSIONS, PLATFORM, SYSTEM_ROLES, AdminPrincipal

SECRET = "unit-test-secret-" + "s" * 64


def _raises(fn, *args, **kw) -> RelayError:
    with pytest.raises(RelayError) as info:
        fn(*args, **kw)
    return info.value


# --- key settings -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "window", "expected"),
    [("25.00", "monthly", (25_000_000, "monthly")), ("0.000001", "daily", (1, "daily")), ("", None, (None, None)), ("0", "total", (0, "total"))],
)
def test_spend_caps_become_integer_micros(amount: str, window: str | None, expected: tuple) -> None:
    assert key_rules.spend_cap(amount, window) == expected


@pytest.mark.parametrize(("amount", "window"), [("abc", "daily"), ("-1", "daily"), ("1e12", "daily"), ("NaN", "daily"), ("1", None), ("", "daily"), ("1.0000001", "daily")])
def test_bad_spend_caps(amount: str, window: str | None) -> None:
    assert _raises(key_rules.spend_cap, amount, window).kind is ErrorKind.BAD_REQUEST


def test_micros_render_as_usd() -> None:
    assert key_rules.micros_to_usd(25_000_000) == "25.00"
    assert key_rules.micros_to_usd(1) == "0.000001"


def test_rate_limits_drop_zero_and_refuse_unknown_or_negative() -> None:
    assert key_rules.rate_limits({"rpm": 5, "tpm": 0, "requests_per_day": 0}) == {"rpm": 5}
    assert _raises(key_rules.rate_limits, {"rps": 1}).param == "api_key.rate_limits"
    assert _raises(key_rules.rate_limits, {"tpm": -2}).param == "api_key.rate_limits.tpm"


def test_names_end_users_models_expiry_and_grace() -> None:
    assert key_rules.name("  CI ") == "CI"
    assert _raises(key_rules.name, "x" * 101).param == "api_key.name"
    assert key_rules.end_user_id("") is None and key_rules.end_user_id("user:42@acme") == "user:42@acme"
    assert _raises(key_rules.end_user_id, "bad user").kind is ErrorKind.BAD_REQUEST
    assert key_rules.allowed_models(["a", "b", "a"], lambda m: True) == ("a", "b")
    assert "zz" in _raises(key_rules.allowed_models, ["a", "zz"], lambda m: m == "a").message
    now = datetime.now(UTC)
    assert key_rules.expiry(None, now) is None and _raises(key_rules.expiry, now, now).param == "api_key.expire_time"
    assert key_rules.grace_seconds(0, 86400) == 86400 and key_rules.grace_seconds(60, 86400) == 60
    assert _raises(key_rules.grace_seconds, -1, 5).param == "grace_period_seconds"


# --- config values ------------------------------------------------------------------------


def test_config_values_are_normalised() -> None:
    assert validate_entry("default_cache_ttl_sec", " 0060 ") == "60"
    assert validate_entry("markup_rate", "0.150") == "0.150"
    assert validate_entry("allowed_models", '["a", "a", "b"]') == '["a", "b"]'
    assert validate_entry("webhook_url", "http://localhost:9000/h") == "http://localhost:9000/h"
    assert validate_entry("spend_cap_usd", "250.5") == "250.5" and validate_entry("spend_cap_window", "Daily") == "daily"
    assert validate_entry("cache_nondeterministic", "YES") == "true" and validate_entry("thread_embeddings", "0") == "false"
    assert validate_entry("semantic_cache_threshold", "0.9") == "0.9"
    assert validate_entry("semantic_cache_model", "emb", lambda m: m == "emb") == "emb"


@pytest.mark.parametrize(
    ("key", "value"),
    [("markup_rate", "-0.1"), ("markup_rate", "inf"), ("markup_rate", "10"), ("markup_rate", "0.12345"),
     ("allowed_models", "[1]"), ("allowed_models", '[""]'), ("webhook_url", "https://"),
     ("default_cache_ttl_sec", "9999999999"), ("spend_cap_usd", "-5"), ("spend_cap_window", "weekly"),
     ("cache_nondeterministic", "maybe"), ("semantic_cache_threshold", "0"), ("semantic_cache_threshold", "1.5"),
     ("nonsense", "1")],
)  # fmt: skip
def test_bad_config_values(key: str, value: str) -> None:
    assert _raises(validate_entry, key, value).kind is ErrorKind.BAD_REQUEST


def test_bad_stored_values_fall_back_to_defaults() -> None:
    config = parse_config("ten_1", "pro", {"markup_rate": "lots", "default_cache_ttl_sec": "30", "spend_cap_usd": "2.5"}, frozenset({"byok"}))
    assert (config.markup_rate, config.default_cache_ttl_s, config.has("byok")) == (Decimal("0.20"), 30, True)
    assert (config.spend_cap_micros, config.spend_cap_window) == (2_500_000, "monthly")
    assert "markup_rate" not in config.values


# --- dashboard tokens -----------------------------------------------------------------------


def _token(**kw) -> str:
    args = dict(issuer="relay", user_id="usr_1", tenant_id="ten_1", tenant_slug="acme", role="admin", permissions=["usage:read"])
    args.update(kw)
    return tokens.issue(kw.pop("secret", SECRET), **{k: v for k, v in args.items() if k != "secret"})


def test_a_token_round_trips_with_the_spec_claims() -> None:
    claims = tokens.verify(SECRET, "relay", _token())
    assert (claims.user_id, claims.tenant_id, claims.tenant_slug, claims.role, claims.permissions) == (
        "usr_1", "ten_1", "acme", "admin", frozenset({"usage:read"}),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("token", "code"),
    [
        (lambda: _token(secret="x" * 40), "invalid_token"),
        (lambda: _token(now=0, ttl_s=10), "token_expired"),
        (lambda: _token(issuer="elsewhere"), "invalid_token"),
        (lambda: "garbage", "invalid_token"),
        (lambda: __import__("jwt").encode({"iss": "relay", "sub": "u", "iat": 0, "exp": 2**40}, SECRET, algorithm="HS256"), "invalid_token"),
        (lambda: __import__("jwt").encode({"iss": "relay", "sub": "u", "tenant_id": "t", "role": "r", "permissions": "all",
                                           "iat": 0, "exp": 2**40}, SECRET, algorithm="HS256"), "invalid_token"),
        (lambda: __import__("jwt").encode({"iss": "relay"}, SECRET, algorithm="HS512"), "invalid_token"),
    ],
)  # fmt: skip
def test_bad_tokens(token, code: str) -> None:
    err = _raises(tokens.verify, SECRET, "relay", token())
    assert (err.kind, err.code, err.http_status) == (ErrorKind.INVALID_API_KEY, code, 401)


# --- principals -----------------------------------------------------------------------------


def test_tenant_scope_comes_from_the_principal() -> None:
    user = AdminPrincipal("user", "usr_1", "ten_1", frozenset({"api_keys:read"}))
    assert user.tenant_scope("") == "ten_1" and user.tenant_scope("ten_1") == "ten_1"
    assert _raises(user.tenant_scope, "ten_2").kind is ErrorKind.PERMISSION_DENIED
    assert PLATFORM.tenant_scope("ten_2") == "ten_2"
    assert _raises(PLATFORM.tenant_scope, " ").kind is ErrorKind.BAD_REQUEST
    user.require("api_keys:read")
    assert "api_keys:create" in _raises(user.require, "api_keys:create").message
    assert _raises(user.require_platform, "do it").kind is ErrorKind.PERMISSION_DENIED


def test_system_roles_nest_and_stay_in_the_vocabulary() -> None:
    assert SYSTEM_ROLES["owner"] == ALL_PERMISSIONS
    assert SYSTEM_ROLES["viewer"] < SYSTEM_ROLES["admin"] < SYSTEM_ROLES["owner"]
    assert SYSTEM_ROLES["developer"] < SYSTEM_ROLES["admin"]
    assert all(perms <= ALL_PERMISSIONS for perms in SYSTEM_ROLES.values())
    assert not any(p.startswith("credentials") for p in SYSTEM_ROLES["viewer"])


# --- wire helpers ---------------------------------------------------------------------------


ENVOY = parse_proxies("127.0.0.1, ::1")


@pytest.mark.parametrize(
    ("metadata", "peer", "expected"),
    [
        ({"x-forwarded-for": "10.0.0.1, 198.51.100.9"}, "ipv4:127.0.0.1:5000", "198.51.100.9"),  # Envoy's entry is last
        ({"x-forwarded-for": "10.0.0.1, 198.51.100.9"}, "ipv6:[::1]:5000", "198.51.100.9"),
        ({"x-forwarded-for": "evil"}, "ipv4:127.0.0.1:5000", None),
        # A client that is not the Envoy hop cannot pick its audit address.
        ({"x-forwarded-for": "198.51.100.9"}, "ipv4:192.0.2.3:5000", "192.0.2.3"),
        ({"x-forwarded-for": "198.51.100.9"}, "ipv6:[2001:db8::7]:5000", "2001:db8::7"),
        ({}, "ipv4:192.0.2.3:5000", "192.0.2.3"),
        ({}, "ipv6:[::1]:5000", "::1"),
        ({}, "unix:/tmp/sock", None),
    ],
)
def test_client_ip(metadata: dict, peer: str, expected: str | None) -> None:
    assert client_ip(metadata, peer, ENVOY) == expected


def test_forwarded_for_is_ignored_without_configured_proxies() -> None:
    assert client_ip({"x-forwarded-for": "198.51.100.9"}, "ipv4:127.0.0.1:5000") == "127.0.0.1"


def test_keyset_page_tokens() -> None:
    stamp = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    rows = [(stamp - timedelta(seconds=i), f"id{i}") for i in range(4)]
    page, token = paged(rows, 3, lambda r: r)
    assert page == rows[:3] and decode_cursor(token) == rows[2]
    assert paged(rows[:2], 3, lambda r: r) == (rows[:2], "")
    for bad in ("!!!", encode_token("no-separator"), encode_token("notadate|id")):
        assert _raises(decode_cursor, bad).param == "page_token"


# --- authenticate: shared cache, purges, last used --------------------------------------------


def _record(secret: str, **kw) -> KeyRecord:
    base = dict(key_id="key_1", key_hash=hash_key(secret), key_hint=secret[-4:], tenant_id="ten_1", tenant_status="active",
                tenant_plan="pro", environment="test", scope="inference", status="active")  # fmt: skip
    return KeyRecord(**{**base, **kw})


def test_cache_records_round_trip() -> None:
    record = _record("s", expires_at=datetime(2030, 1, 1, tzinfo=UTC), allowed_models=("a",),
                     rate_limit_overrides={"rpm": 3}, spend_cap_micros=5, spend_cap_window="daily")  # fmt: skip
    assert decode_record(encode_record(record)) == record


class _Store:
    def __init__(self, records: dict[str, KeyRecord]) -> None:
        self.records, self.lookups = records, 0

    async def find_by_hash(self, key_hash: str) -> KeyRecord | None:
        self.lookups += 1
        return self.records.get(key_hash)


class _Shared:
    def __init__(self) -> None:
        self.entries: dict[str, KeyRecord] = {}

    async def get(self, key_hash: str):
        return self.entries.get(key_hash), None

    async def put(self, record: KeyRecord, seen: object) -> None:
        self.entries[record.key_hash] = record


@pytest.mark.asyncio
async def test_the_shared_cache_sits_between_process_and_store_and_use_is_reported() -> None:
    key = mint_key("test")
    store, shared, used = _Store({key.key_hash: _record(key.secret)}), _Shared(), []
    md = {"authorization": f"Bearer {key.secret}"}
    first = Authenticator(store, shared=shared, on_use=used.append)
    await first.authenticate(md)
    second = Authenticator(store, shared=shared)  # another worker: empty local cache
    await second.authenticate(md)
    assert store.lookups == 1 and key.key_hash in shared.entries and used == ["key_1"]


@pytest.mark.asyncio
async def test_purge_tenant_drops_only_that_tenants_keys() -> None:
    a, b = mint_key("test"), mint_key("test")
    store = _Store({a.key_hash: _record(a.secret), b.key_hash: _record(b.secret, key_id="key_2", tenant_id="ten_2")})
    auth = Authenticator(store, cache_ttl_s=3600)
    for k in (a, b):
        await auth.authenticate({"authorization": f"Bearer {k.secret}"})
    auth.purge_tenant("ten_1")
    assert a.key_hash not in auth.cache and b.key_hash in auth.cache


@pytest.mark.asyncio
async def test_last_used_keeps_a_failed_batch_for_the_next_flush() -> None:
    class FlakyStore:
        def __init__(self) -> None:
            self.calls: list[dict] = []
            self.fail = True

        async def touch_last_used(self, used):
            self.calls.append(dict(used))
            if self.fail:
                raise OSError("postgres down")
            return len(used)

    ticks = iter(datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=i) for i in range(100))
    store = FlakyStore()
    recorder = LastUsedRecorder(store, clock=lambda: next(ticks))
    recorder.touch("k1")
    recorder.touch("k1")
    recorder.touch("k2")
    assert await recorder.flush() == 0 and recorder.pending == 2
    recorder.touch("k2")  # newer than the failed batch's k2
    store.fail = False
    assert await recorder.flush() == 2
    assert store.calls[-1] == {"k1": datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC), "k2": datetime(2026, 1, 1, 0, 0, 3, tzinfo=UTC)}
    assert await recorder.flush() == 0 and len(store.calls) == 2


def test_the_admin_authenticator_trusts_only_the_configured_hops() -> None:
    from types import SimpleNamespace

    from relay_server.api.admin_registry import admin_authenticator
    from relay_server.settings import Settings

    app = SimpleNamespace(settings=Settings.from_env({"RELAY_TRUSTED_PROXIES": "10.0.0.0/8, ::1"}),
                          tenancy=SimpleNamespace(authenticator=None, member_permissions=None), db=None)  # fmt: skip
    auth = admin_authenticator(app)
    assert client_ip({"x-forwarded-for": "198.51.100.9"}, "ipv4:10.1.2.3:1", auth.trusted_proxies) == "198.51.100.9"
    assert client_ip({"x-forwarded-for": "198.51.100.9"}, "ipv4:127.0.0.1:1", auth.trusted_proxies) == "127.0.0.1"
    assert admin_authenticator(SimpleNamespace(settings=Settings.from_env({}), tenancy=app.tenancy, db=None)).trusted_proxies == ()
