-- Metering: which usage buckets need recomputing, and billing kept per environment.
--
-- usage_rollup_pending holds one row per (tenant, UTC day, environment) whose
-- request rows changed since usage_daily was last recomputed.  The request-log
-- writer upserts it in the SAME transaction as the rows it inserts (ON
-- CONFLICT DO UPDATE, which locks the row until that transaction commits); the
-- rollup worker claims rows with FOR UPDATE SKIP LOCKED, recomputes the bucket
-- and deletes the row in one transaction.  So a bucket whose rows are still
-- being written is never claimed, and rows committed after a recompute always
-- leave a fresh mark behind: no late or replayed row is missed, and a worker
-- that was down finds every mark waiting for it.
CREATE TABLE usage_rollup_pending (
    tenant_id    TEXT        NOT NULL REFERENCES tenants (id),
    date         DATE        NOT NULL,                           -- UTC day of requests.created_at
    environment  TEXT        NOT NULL DEFAULT 'live' CHECK (environment IN ('live', 'test')),
    marked_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, date, environment)
);

CREATE INDEX idx_usage_rollup_pending_marked ON usage_rollup_pending (marked_at);

SELECT relay_enable_tenant_rls('usage_rollup_pending');
GRANT SELECT, INSERT, UPDATE, DELETE ON usage_rollup_pending TO relay_app;

-- Test-mode traffic gets its own (never invoiced) statement per month, so a
-- tenant sees what its test traffic would have cost without it touching the
-- live bill.  Existing rows are live.
ALTER TABLE billing_periods
    ADD COLUMN environment TEXT NOT NULL DEFAULT 'live' CHECK (environment IN ('live', 'test'));
ALTER TABLE billing_periods DROP CONSTRAINT billing_periods_tenant_id_period_start_key;
ALTER TABLE billing_periods ADD CONSTRAINT billing_periods_tenant_env_period_key
    UNIQUE (tenant_id, environment, period_start);

