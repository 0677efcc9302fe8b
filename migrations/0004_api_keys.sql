-- API keys.  Only the SHA-256 of a key is stored; the full key is shown once.
--
-- Two scopes: 'inference' keys call the data plane; 'management' keys (a
-- tenant's master key) may also mint child keys, one per end user of the
-- tenant's product, each with its own model list, limits and spend cap.
--
-- Rotation creates a new row; the old row keeps working until
-- grace_expires_at and points at its successor through rotated_to_id.

CREATE TABLE api_keys (
    id                    TEXT        PRIMARY KEY,
    tenant_id             TEXT        NOT NULL REFERENCES tenants (id),
    name                  TEXT        NOT NULL,                  -- "Production", "CI", "user_42"
    key_prefix            TEXT        NOT NULL CHECK (key_prefix IN ('rly_live_', 'rly_test_')),
    key_hash              TEXT        NOT NULL UNIQUE,           -- hex SHA-256 of the full key
    key_hint              TEXT        NOT NULL,                  -- last 4 chars
    environment           TEXT        NOT NULL DEFAULT 'live' CHECK (environment IN ('live', 'test')),
    scope                 TEXT        NOT NULL DEFAULT 'inference' CHECK (scope IN ('inference', 'management')),
    parent_key_id         TEXT,                                  -- the management key that minted it
    end_user_id           TEXT,                                  -- the tenant's own id for its end user
    allowed_models        TEXT[],                                -- relay names; NULL = every model the tenant may use
    rate_limit_overrides  JSONB,                                 -- {"rpm": 10, "tpm": 20000}; below the tenant's limits
    spend_cap_micros      BIGINT      CHECK (spend_cap_micros >= 0),  -- micro-USD, billed amount
    spend_cap_window      TEXT        CHECK (spend_cap_window IN ('daily', 'monthly', 'total')),
    status                TEXT        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked', 'expired')),
    revoked_at            TIMESTAMPTZ,
    grace_expires_at      TIMESTAMPTZ,                           -- after rotation: old secret valid until then
    rotated_to_id         TEXT,
    last_used_at          TIMESTAMPTZ,
    expires_at            TIMESTAMPTZ,
    created_at            TIMESTAMPTZ NOT NULL DEFAULT now(),
    created_by            TEXT,                                  -- the user who made it (dashboard)
    created_by_key_id     TEXT,                                  -- the key that minted it (API)
    metadata              JSONB,
    UNIQUE (tenant_id, id),
    CHECK (environment = CASE key_prefix WHEN 'rly_live_' THEN 'live' ELSE 'test' END),
    CHECK (spend_cap_micros IS NULL OR spend_cap_window IS NOT NULL),
    CHECK ((status = 'revoked') = (revoked_at IS NOT NULL)),
    -- Composite keys: every reference stays inside the tenant.
    FOREIGN KEY (tenant_id, parent_key_id)     REFERENCES api_keys (tenant_id, id),
    FOREIGN KEY (tenant_id, rotated_to_id)     REFERENCES api_keys (tenant_id, id),
    FOREIGN KEY (tenant_id, created_by_key_id) REFERENCES api_keys (tenant_id, id),
    FOREIGN KEY (tenant_id, created_by)        REFERENCES users (tenant_id, id)
);

CREATE INDEX idx_api_keys_tenant_id ON api_keys (tenant_id, created_at DESC);
CREATE INDEX idx_api_keys_parent    ON api_keys (parent_key_id) WHERE parent_key_id IS NOT NULL;
CREATE INDEX idx_api_keys_end_user  ON api_keys (tenant_id, end_user_id) WHERE end_user_id IS NOT NULL;

SELECT relay_enable_tenant_rls('api_keys');
GRANT SELECT, INSERT, UPDATE, DELETE ON api_keys TO relay_app;
