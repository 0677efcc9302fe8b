"""The demo tenant behind `make up`: one active tenant, its owner and a test key.

Idempotent.  A key cannot be read back (only its hash is stored), so the caller
hands in the key it saved last time; if that key is still active it is kept,
otherwise a new one is minted.
"""

from __future__ import annotations

import json

import psycopg

from relay_server.domain.keys import hash_key, mint_key

DEMO_TENANT_ID = "ten_demo"
DEMO_USER_ID = "usr_demo_owner"
DEMO_KEY_NAME = "Demo test key"


def seed_demo(owner_dsn: str, existing_key: str | None = None) -> str:
    """Ensure the demo tenant and a working test key; returns a JSON line with both."""
    with psycopg.connect(owner_dsn, autocommit=False) as conn:
        conn.execute(
            """INSERT INTO tenants (id, slug, name, plan, status)
               VALUES (%s, 'demo', 'Demo tenant', 'pro', 'active')
               ON CONFLICT (id) DO NOTHING""",
            (DEMO_TENANT_ID,),
        )
        conn.execute(
            """INSERT INTO users (id, tenant_id, email, role)
               VALUES (%s, %s, 'owner@demo.relay.local', 'owner')
               ON CONFLICT (id) DO NOTHING""",
            (DEMO_USER_ID, DEMO_TENANT_ID),
        )
        if existing_key:
            row = conn.execute(
                "SELECT 1 FROM api_keys WHERE key_hash = %s AND tenant_id = %s AND status = 'active'",
                (hash_key(existing_key), DEMO_TENANT_ID),
            ).fetchone()
            if row is not None:
                return json.dumps({"tenant_id": DEMO_TENANT_ID, "test_key": existing_key, "minted": False})
        key = mint_key("test")
        conn.execute(
            """INSERT INTO api_keys (id, tenant_id, name, key_prefix, key_hash, key_hint, environment, scope, created_by)
               VALUES (%s, %s, %s, %s, %s, %s, 'test', 'management', %s)""",
            (f"key_demo_{key.key_hash[:12]}", DEMO_TENANT_ID, DEMO_KEY_NAME, key.key_prefix, key.key_hash, key.key_hint, DEMO_USER_ID),
        )
    return json.dumps({"tenant_id": DEMO_TENANT_ID, "test_key": key.secret, "minted": True})
