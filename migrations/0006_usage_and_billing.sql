-- Daily usage rollup and monthly billing.
--
-- usage_daily has one row per (tenant, date, model, environment, api key).
-- The key dimension serves usage-by-key and per-end-user reports (a child key
-- belongs to one end user, so end_user_id is copied from the key, not part of
-- the key); environment keeps test traffic out of live dashboards and bills.
-- The rollup worker recomputes whole days from `requests` and upserts them
-- (INSERT ... ON CONFLICT DO UPDATE SET col = EXCLUDED.col), which is
-- idempotent and tolerates late or replayed request rows.
--
-- Costs are NUMERIC(18,8) rather than the spec's (12,4): summing sub-cent
-- request costs at 4 decimals would round away real money.

CREATE TABLE usage_daily (
    tenant_id          TEXT          NOT NULL REFERENCES tenants (id),
    date               DATE          NOT NULL,                   -- UTC day
    model_id           TEXT          NOT NULL REFERENCES models (id),
    environment        TEXT          NOT NULL DEFAULT 'live' CHECK (environment IN ('live', 'test')),
    api_key_id         TEXT          NOT NULL,
    end_user_id        TEXT,
    request_count      BIGINT        NOT NULL DEFAULT 0,
    input_tokens       BIGINT        NOT NULL DEFAULT 0,
    output_tokens      BIGINT        NOT NULL DEFAULT 0,
    total_tokens       BIGINT        NOT NULL DEFAULT 0,
    cache_read_tokens  BIGINT        NOT NULL DEFAULT 0,
    cache_write_tokens BIGINT        NOT NULL DEFAULT 0,
    total_cost         NUMERIC(18,8) NOT NULL DEFAULT 0,         -- provider cost, USD
    relay_revenue      NUMERIC(18,8) NOT NULL DEFAULT 0,
    cost_micros        BIGINT        NOT NULL DEFAULT 0,         -- billed to the tenant
    cache_hits         BIGINT        NOT NULL DEFAULT 0,
    error_count        BIGINT        NOT NULL DEFAULT 0,
    latency_ms_total   BIGINT        NOT NULL DEFAULT 0,         -- so averages can be merged
    avg_latency_ms     INT,
    updated_at         TIMESTAMPTZ   NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, date, model_id, environment, api_key_id),
    FOREIGN KEY (tenant_id, api_key_id) REFERENCES api_keys (tenant_id, id)
);

CREATE INDEX idx_usage_daily_key ON usage_daily (tenant_id, api_key_id, date);
CREATE INDEX idx_usage_daily_end_user ON usage_daily (tenant_id, end_user_id, date) WHERE end_user_id IS NOT NULL;

CREATE TABLE billing_periods (
    id            TEXT          PRIMARY KEY,
    tenant_id     TEXT          NOT NULL REFERENCES tenants (id),
    period_start  DATE          NOT NULL,
    period_end    DATE          NOT NULL,                        -- exclusive
    status        TEXT          NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'finalized', 'paid', 'failed', 'void')),
    total_cost    NUMERIC(18,8),
    cost_micros   BIGINT,
    invoice_id    TEXT,                                          -- Stripe invoice id
    finalized_at  TIMESTAMPTZ,
    paid_at       TIMESTAMPTZ,
    created_at    TIMESTAMPTZ   NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, period_start),
    UNIQUE (tenant_id, id),
    CHECK (period_end > period_start)
);

CREATE TABLE billing_line_items (
    id                 TEXT          PRIMARY KEY,
    billing_period_id  TEXT          NOT NULL,
    tenant_id          TEXT          NOT NULL REFERENCES tenants (id),
    model_id           TEXT          NOT NULL REFERENCES models (id),
    request_count      BIGINT        NOT NULL,
    input_tokens       BIGINT        NOT NULL,
    output_tokens      BIGINT        NOT NULL,
    total_cost         NUMERIC(18,8) NOT NULL,
    cost_micros        BIGINT        NOT NULL DEFAULT 0,
    created_at         TIMESTAMPTZ   NOT NULL DEFAULT now(),
    UNIQUE (billing_period_id, model_id),
    FOREIGN KEY (tenant_id, billing_period_id) REFERENCES billing_periods (tenant_id, id) ON DELETE CASCADE
);

CREATE INDEX idx_billing_line_items_tenant ON billing_line_items (tenant_id);

SELECT relay_enable_tenant_rls('usage_daily');
SELECT relay_enable_tenant_rls('billing_periods');
SELECT relay_enable_tenant_rls('billing_line_items');
GRANT SELECT, INSERT, UPDATE, DELETE ON usage_daily, billing_periods, billing_line_items TO relay_app;
