-- The model catalog (global), provider credentials (Relay-owned and BYOK) and
-- provider health events (global).

CREATE TABLE providers (
    id          TEXT        PRIMARY KEY,                         -- openai | anthropic | mistral | groq | test
    name        TEXT        NOT NULL,                            -- OpenAI
    -- Which translator speaks to it.  openai_compatible covers any base_url
    -- that speaks OpenAI's API (vLLM, Together, a tenant's own proxy).
    api         TEXT        NOT NULL
                CHECK (api IN ('openai', 'anthropic', 'mistral', 'groq', 'openai_compatible', 'test')),
    base_url    TEXT        NOT NULL,                            -- https://api.openai.com/v1
    status      TEXT        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'degraded', 'down', 'disabled')),
    priority    INT         NOT NULL DEFAULT 100,                -- lower = more preferred
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TRIGGER providers_touch BEFORE UPDATE ON providers FOR EACH ROW EXECUTE FUNCTION relay_touch_updated_at();

CREATE TABLE models (
    id                       TEXT        PRIMARY KEY,            -- claude-3-5-sonnet-20241022
    provider_id              TEXT        NOT NULL REFERENCES providers (id),
    relay_name               TEXT        NOT NULL UNIQUE,        -- the name tenants use: claude-3-5-sonnet
    provider_name            TEXT        NOT NULL,               -- the name the provider accepts
    display_name             TEXT        NOT NULL,
    kind                     TEXT        NOT NULL DEFAULT 'chat' CHECK (kind IN ('chat', 'completion', 'embedding')),
    -- USD per 1M tokens.  Cache prices are NULL where the provider has none.
    input_cost_per_1m        NUMERIC     NOT NULL CHECK (input_cost_per_1m >= 0),
    output_cost_per_1m       NUMERIC     NOT NULL CHECK (output_cost_per_1m >= 0),
    cache_read_cost_per_1m   NUMERIC              CHECK (cache_read_cost_per_1m >= 0),
    cache_write_cost_per_1m  NUMERIC              CHECK (cache_write_cost_per_1m >= 0),
    context_window           INT         NOT NULL CHECK (context_window > 0),
    max_output_tokens        INT                  CHECK (max_output_tokens > 0),
    embedding_dimensions     INT                  CHECK (embedding_dimensions > 0),
    supports_streaming       BOOLEAN     NOT NULL DEFAULT true,
    supports_functions       BOOLEAN     NOT NULL DEFAULT false,
    supports_vision          BOOLEAN     NOT NULL DEFAULT false,
    status                   TEXT        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'deprecated', 'disabled')),
    created_at               TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK ((kind = 'embedding') = (embedding_dimensions IS NOT NULL))
);

CREATE INDEX idx_models_provider_id ON models (provider_id);

-- tenant_id NULL = a Relay-owned (pooled) key; otherwise the tenant's own key
-- (BYOK).  Several keys per provider are allowed, for either owner: the router
-- spreads load over them and skips saturated ones.
--
-- The secret is envelope-encrypted: key_encrypted = AES-256-GCM(DEK, secret)
-- with key_nonce; dek_wrapped = the DEK wrapped by master key master_key_id
-- (its nonce and tag inside the blob).  Rotating the master key rewraps
-- dek_wrapped row by row (see credential_rotation_checkpoints).
CREATE TABLE provider_credentials (
    id              TEXT        PRIMARY KEY,
    tenant_id       TEXT        REFERENCES tenants (id),
    provider_id     TEXT        NOT NULL REFERENCES providers (id),
    name            TEXT        NOT NULL DEFAULT 'default',
    key_encrypted   BYTEA       NOT NULL,
    key_nonce       BYTEA       NOT NULL,
    dek_wrapped     BYTEA       NOT NULL,
    master_key_id   TEXT        NOT NULL,
    key_hint        TEXT        NOT NULL,                        -- last 4 chars, for display
    is_relay_owned  BOOLEAN     GENERATED ALWAYS AS (tenant_id IS NULL) STORED,
    base_url        TEXT,                                        -- overrides providers.base_url (openai_compatible)
    status          TEXT        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled', 'revoked')),
    rpm_limit       INT         CHECK (rpm_limit > 0),           -- the provider's cap for this key
    tpm_limit       INT         CHECK (tpm_limit > 0),
    priority        INT         NOT NULL DEFAULT 100,            -- lower = tried first
    last_rotated_at TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX idx_provider_credentials_tenant   ON provider_credentials (tenant_id, provider_id) WHERE status = 'active';
CREATE INDEX idx_provider_credentials_pooled   ON provider_credentials (provider_id, priority) WHERE tenant_id IS NULL AND status = 'active';
CREATE INDEX idx_provider_credentials_master   ON provider_credentials (master_key_id);
CREATE TRIGGER provider_credentials_touch BEFORE UPDATE ON provider_credentials
    FOR EACH ROW EXECUTE FUNCTION relay_touch_updated_at();

CREATE TABLE provider_health_events (
    id          TEXT        PRIMARY KEY,
    provider_id TEXT        NOT NULL REFERENCES providers (id),
    credential_id TEXT      REFERENCES provider_credentials (id),
    status      TEXT        NOT NULL CHECK (status IN ('healthy', 'degraded', 'down')),
    error_rate  NUMERIC,                                         -- 5-minute error rate at the time
    p95_ms      INT,
    message     TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX idx_provider_health_events ON provider_health_events (provider_id, created_at DESC);

-- provider_credentials: a tenant sees its own keys and Relay's pooled keys
-- (the router needs both); it may write only its own.
SELECT relay_enable_tenant_rls('provider_credentials');
DROP POLICY tenant_isolation ON provider_credentials;
CREATE POLICY tenant_read ON provider_credentials FOR SELECT
    USING (tenant_id IS NULL OR tenant_id = current_setting('app.tenant_id', true));
CREATE POLICY tenant_insert ON provider_credentials FOR INSERT
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));
CREATE POLICY tenant_update ON provider_credentials FOR UPDATE
    USING (tenant_id = current_setting('app.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true));
CREATE POLICY tenant_delete ON provider_credentials FOR DELETE
    USING (tenant_id = current_setting('app.tenant_id', true));

GRANT SELECT ON providers, models, provider_health_events TO relay_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON provider_credentials TO relay_app;
