-- The web console's own sign-in state (server/relay_server/dashboard/).
--
-- An account is a person (one email, one password) across tenants: what it may
-- do in a tenant comes from its `users` row there (same email) and that row's
-- roles, exactly as for any dashboard JWT.  Operators are accounts with
-- is_operator.  None of these tables has a tenant column: they are platform
-- rows the console reads as the owner, never visible to relay_app.
CREATE TABLE dashboard_accounts (
    email            TEXT        PRIMARY KEY CHECK (email = lower(email) AND position('@' IN email) > 1),
    -- scrypt$n$r$p$salt_b64$hash_b64 (never the password)
    password_hash    TEXT        NOT NULL,
    is_operator      BOOLEAN     NOT NULL DEFAULT false,
    failed_attempts  INTEGER     NOT NULL DEFAULT 0,
    locked_until     TIMESTAMPTZ,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- A signed-in browser.  Only the SHA-256 of the cookie's value is stored.
-- user_id: the `users` row the session acts as (it names the tenant); NULL for
-- an operator session.
CREATE TABLE dashboard_sessions (
    id_hash     TEXT        PRIMARY KEY,
    email       TEXT        NOT NULL REFERENCES dashboard_accounts (email) ON DELETE CASCADE,
    user_id     TEXT        REFERENCES users (id) ON DELETE CASCADE,
    csrf_token  TEXT        NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX idx_dashboard_sessions_email ON dashboard_sessions (email);

-- Invitation links and password-reset links: hashed at rest, single use, expiring.
CREATE TABLE dashboard_tokens (
    token_hash  TEXT        PRIMARY KEY,
    kind        TEXT        NOT NULL CHECK (kind IN ('invitation', 'password_reset')),
    email       TEXT        NOT NULL CHECK (email = lower(email)),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at  TIMESTAMPTZ NOT NULL,
    used_at     TIMESTAMPTZ
);
