"""The bench tenant: a live key and a test key, unlimited quotas, a huge spend
cap, and the ``openai`` provider pointed at the mock upstream.

Runs as the owner role before the server starts (the server loads the catalog
and provider table at start-up).  The pooled ``openai`` credential is sealed
with the public credential API (``relay_server.crypto`` +
``storage/postgres/credentials.py``) when it exists; otherwise the row gets
placeholder ciphertext, which is enough for the schema but not to decrypt,
and ``Seeded.notes`` says so.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from dataclasses import dataclass, field

import psycopg
from psycopg.rows import dict_row

from relay_server.domain.keys import mint_key

TENANT_ID = "ten_bench"
USER_ID = "usr_bench_owner"
CREDENTIAL_ID = "cred_bench_openai"
# One million USD a month: a real cap (the spend path runs) that never triggers.
SPEND_CAP_MICROS = 10**12
# Per-key limits far above anything two cores can drive.
KEY_LIMITS = {"rpm": 100_000_000, "tpm": 100_000_000_000}
UPSTREAM_SECRET = "sk-bench-mock-upstream-0000"
# Every input and output check that runs locally (no classifier: it would measure the hook's server).
GUARDED_POLICY = {
    "input": {"max_input_tokens": 8000, "max_messages": 50, "max_characters": 100000, "max_tools": 16},
    "pii": {"email": "redact", "phone": "redact", "credit_card": "redact", "iban": "redact", "national_id": "redact",
            "secret": "redact", "ip": "redact", "scope": ["input", "output"]},
    "deny": {"patterns": ["(?i)project\\s+falcon"], "action": "block"},
    "injection": "block",
}


@dataclass
class Seeded:
    live_key: str = field(repr=False)
    test_key: str = field(repr=False)
    guarded_key: str = field(repr=False)  # a live key with every guardrail on (the `*-guarded` scenarios)
    credential: str  # "sealed" | "placeholder"
    notes: list[str] = field(default_factory=list)


def new_master_key() -> str:
    """A fresh ``RELAY_MASTER_KEY`` (base64 of 32 random bytes) for this run only."""
    return base64.b64encode(os.urandom(32)).decode()


def seed(owner_dsn: str, mock_base_url: str, master_key: str) -> Seeded:
    live = mint_key("live")
    test = mint_key("test")
    guarded = mint_key("live")
    with psycopg.connect(owner_dsn, autocommit=False) as conn:
        conn.execute(
            """INSERT INTO tenants (id, slug, name, plan, status)
               VALUES (%s, 'bench', 'Bench tenant', 'enterprise', 'active')""",
            (TENANT_ID,),
        )
        conn.execute(
            "INSERT INTO users (id, tenant_id, email, role) VALUES (%s, %s, 'bench@relay.local', 'owner')",
            (USER_ID, TENANT_ID),
        )
        for resource, window in (("rpm", "per_minute"), ("tpm", "per_minute"), ("requests_per_day", "per_day")):
            conn.execute(
                """INSERT INTO quota_overrides (id, tenant_id, resource, limit_value, time_window, reason)
                   VALUES (%s, %s, %s, -1, %s, 'bench: unlimited')""",
                (f"qo_bench_{resource}", TENANT_ID, resource, window),
            )
        for key, environment, key_id in ((live, "live", "key_bench_live"), (test, "test", "key_bench_test"),
                                         (guarded, "live", "key_bench_guarded")):
            conn.execute(
                """INSERT INTO api_keys (id, tenant_id, name, key_prefix, key_hash, key_hint, environment, scope,
                                         rate_limit_overrides, spend_cap_micros, spend_cap_window, created_by)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, 'inference', %s, %s, 'monthly', %s)""",
                (
                    key_id, TENANT_ID, f"bench {key_id}", key.key_prefix, key.key_hash,
                    key.key_hint, environment, json.dumps(KEY_LIMITS), SPEND_CAP_MICROS, USER_ID,
                ),
            )  # fmt: skip
        # Guardrails (docs/guardrails.md) on for one key only: the other keys keep the off path.
        conn.execute(
            "INSERT INTO tenant_config (tenant_id, key, value) VALUES (%s, 'guardrails', %s)",
            (TENANT_ID, json.dumps({"keys": {"key_bench_guarded": GUARDED_POLICY}})),
        )
        # Every OpenAI-wire provider goes to the mock; only `openai` gets a key.
        conn.execute("UPDATE providers SET base_url = %s WHERE id = 'openai'", (mock_base_url,))
        # The `chat-alias` scenario's virtual model (docs/routing.md): the heaviest strategy's path
        # (latency EWMAs read with the plan's Redis reads), one target so the mock sees the same requests.
        conn.execute(
            """INSERT INTO virtual_models (id, tenant_id, name, strategy, targets)
               VALUES ('vm_bench', NULL, 'bench-fast', 'lowest-latency', '[{"model": "gpt-4o-mini"}]')
               ON CONFLICT DO NOTHING"""
        )
    seeded = Seeded(live.secret, test.secret, guarded.secret, "placeholder")
    try:
        asyncio.run(_seal_credential(owner_dsn, master_key, mock_base_url))
        seeded.credential = "sealed"
    except ImportError as exc:
        _placeholder_credential(owner_dsn, mock_base_url)
        seeded.notes.append(f"credential API missing ({exc.name}): placeholder ciphertext inserted")
    return seeded


async def _seal_credential(owner_dsn: str, master_key: str, base_url: str) -> None:
    from relay_server.crypto.envelope import RecordRef, seal
    from relay_server.crypto.keyring import Keyring
    from relay_server.storage.postgres import credentials

    keyring = Keyring.parse(master_key)
    assert keyring is not None
    sealed = seal(keyring, UPSTREAM_SECRET, RecordRef(CREDENTIAL_ID, None, "openai"))
    new = credentials.NewCredential(
        id=CREDENTIAL_ID,
        tenant_id=None,
        provider_id="openai",
        name="bench mock",
        key_hint=UPSTREAM_SECRET[-4:],
        base_url=base_url,
        rpm_limit=None,
        tpm_limit=None,
        priority=100,
        sealed=sealed,
    )
    async with await psycopg.AsyncConnection.connect(owner_dsn, autocommit=True, row_factory=dict_row) as conn:
        await credentials.insert(conn, new)


def _placeholder_credential(owner_dsn: str, base_url: str) -> None:
    with psycopg.connect(owner_dsn, autocommit=True) as conn:
        conn.execute(
            """INSERT INTO provider_credentials (id, tenant_id, provider_id, name, key_encrypted, key_nonce,
                                                 dek_wrapped, master_key_id, key_hint, base_url)
               VALUES (%s, NULL, 'openai', 'bench mock', %s, %s, %s, 'bench-placeholder', %s, %s)""",
            (CREDENTIAL_ID, b"\0" * 16, b"\0" * 12, b"\0" * 60, UPSTREAM_SECRET[-4:], base_url),
        )
