-- Per (tenant, environment, day, model) sums of usage_daily.
--
-- usage_daily has a row per key and day: a tenant with 10k keys has 300k rows
-- a month, and summing them for the usage API's by-day and by-model groupings
-- and its totals took most of a second.  These sums are a few rows per day;
-- the rollup rewrites a day's rows here in the same transaction as it
-- recomputes that day in usage_daily, so the two never disagree.  Queries
-- filtered by key or end user still read usage_daily.

CREATE TABLE usage_daily_model (
    tenant_id          TEXT          NOT NULL REFERENCES tenants (id),
    environment        TEXT          NOT NULL CHECK (environment IN ('live', 'test')),
    date               DATE          NOT NULL,                   -- UTC day
    model_id           TEXT          NOT NULL,
    request_count      BIGINT        NOT NULL DEFAULT 0,
    input_tokens       BIGINT        NOT NULL DEFAULT 0,
    output_tokens      BIGINT        NOT NULL DEFAULT 0,
    total_tokens       BIGINT        NOT NULL DEFAULT 0,
    cache_read_tokens  BIGINT        NOT NULL DEFAULT 0,
    cache_write_tokens BIGINT        NOT NULL DEFAULT 0,
    total_cost         NUMERIC(18,8) NOT NULL DEFAULT 0,
    relay_revenue      NUMERIC(18,8) NOT NULL DEFAULT 0,
    cost_micros        BIGINT        NOT NULL DEFAULT 0,
    cache_hits         BIGINT        NOT NULL DEFAULT 0,
    error_count        BIGINT        NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, environment, date, model_id)
);

INSERT INTO usage_daily_model (tenant_id, environment, date, model_id, request_count, input_tokens, output_tokens,
                               total_tokens, cache_read_tokens, cache_write_tokens, total_cost, relay_revenue,
                               cost_micros, cache_hits, error_count)
SELECT tenant_id, environment, date, model_id, sum(request_count), sum(input_tokens), sum(output_tokens),
       sum(total_tokens), sum(cache_read_tokens), sum(cache_write_tokens), sum(total_cost), sum(relay_revenue),
       sum(cost_micros), sum(cache_hits), sum(error_count)
  FROM usage_daily
 GROUP BY tenant_id, environment, date, model_id;

SELECT relay_enable_tenant_rls('usage_daily_model');
GRANT SELECT, INSERT, UPDATE, DELETE ON usage_daily_model TO relay_app;
