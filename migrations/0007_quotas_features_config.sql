-- Plan quotas and per-tenant overrides, feature flags, per-tenant config.
--
-- The spec names the window column `window`, a reserved word in Postgres
-- (every query would have to quote it); it is `time_window` here.

CREATE TABLE quota_definitions (
    plan         TEXT   NOT NULL CHECK (plan IN ('free', 'starter', 'pro', 'enterprise')),
    resource     TEXT   NOT NULL CHECK (resource IN ('rpm', 'tpm', 'requests_per_day')),
    limit_value  BIGINT NOT NULL CHECK (limit_value >= -1),      -- -1 = unlimited
    time_window  TEXT   NOT NULL CHECK (time_window IN ('per_minute', 'per_day')),
    PRIMARY KEY (plan, resource, time_window)
);

CREATE TABLE quota_overrides (
    id           TEXT        PRIMARY KEY,
    tenant_id    TEXT        NOT NULL REFERENCES tenants (id),
    resource     TEXT        NOT NULL CHECK (resource IN ('rpm', 'tpm', 'requests_per_day')),
    limit_value  BIGINT      NOT NULL CHECK (limit_value >= -1),
    time_window  TEXT        NOT NULL CHECK (time_window IN ('per_minute', 'per_day')),
    reason       TEXT,
    expires_at   TIMESTAMPTZ,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, resource, time_window)
);

CREATE TABLE plan_features (
    plan     TEXT    NOT NULL CHECK (plan IN ('free', 'starter', 'pro', 'enterprise')),
    feature  TEXT    NOT NULL,        -- semantic_cache | byok | sso | audit_log | higher_rpm | webhooks | threads
    enabled  BOOLEAN NOT NULL DEFAULT true,
    PRIMARY KEY (plan, feature)
);

CREATE TABLE tenant_feature_overrides (
    tenant_id   TEXT        NOT NULL REFERENCES tenants (id),
    feature     TEXT        NOT NULL,
    enabled     BOOLEAN     NOT NULL,
    reason      TEXT,
    expires_at  TIMESTAMPTZ,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, feature)
);

-- Free-form per-tenant settings: default_cache_ttl_sec, markup_rate,
-- allowed_models (JSON array), webhook_url, ...  Values are text as in the
-- spec; readers parse and validate them.
CREATE TABLE tenant_config (
    tenant_id   TEXT        NOT NULL REFERENCES tenants (id),
    key         TEXT        NOT NULL,
    value       TEXT        NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, key)
);

CREATE TRIGGER tenant_config_touch BEFORE UPDATE ON tenant_config
    FOR EACH ROW EXECUTE FUNCTION relay_touch_updated_at();

SELECT relay_enable_tenant_rls('quota_overrides');
SELECT relay_enable_tenant_rls('tenant_feature_overrides');
SELECT relay_enable_tenant_rls('tenant_config');

GRANT SELECT ON quota_definitions, plan_features TO relay_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON quota_overrides, tenant_feature_overrides, tenant_config TO relay_app;
