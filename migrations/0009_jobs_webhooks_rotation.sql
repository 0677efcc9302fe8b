-- Durable background work: the job queue (provisioning, lifecycle, rollups),
-- webhook deliveries, and checkpoints of credential re-encryption runs.

-- Workers claim jobs with
--   UPDATE jobs SET status = 'running', locked_at = now(), locked_by = $1, attempts = attempts + 1
--   WHERE id = (SELECT id FROM jobs WHERE status = 'queued' AND run_after <= now()
--               ORDER BY run_after, id FOR UPDATE SKIP LOCKED LIMIT 1)
--   RETURNING *;
-- A job stuck in 'running' past a lease (locked_at too old) is requeued.
-- dedupe_key makes enqueueing idempotent while a job is pending
-- (e.g. 'provision:ten_abc'): a second enqueue conflicts instead of duplicating.
CREATE TABLE jobs (
    id            BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind          TEXT        NOT NULL,                          -- provision_tenant | expire_trial | ...
    tenant_id     TEXT        REFERENCES tenants (id),           -- NULL for platform-wide jobs
    payload       JSONB       NOT NULL DEFAULT '{}',
    status        TEXT        NOT NULL DEFAULT 'queued'
                  CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'dead')),
    attempts      INT         NOT NULL DEFAULT 0,
    max_attempts  INT         NOT NULL DEFAULT 10,
    run_after     TIMESTAMPTZ NOT NULL DEFAULT now(),
    locked_at     TIMESTAMPTZ,
    locked_by     TEXT,
    last_error    TEXT,
    dedupe_key    TEXT,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at   TIMESTAMPTZ
);

CREATE INDEX idx_jobs_ready ON jobs (run_after, id) WHERE status = 'queued';
CREATE INDEX idx_jobs_running ON jobs (locked_at) WHERE status = 'running';
CREATE INDEX idx_jobs_tenant ON jobs (tenant_id, created_at DESC) WHERE tenant_id IS NOT NULL;
CREATE UNIQUE INDEX idx_jobs_dedupe ON jobs (dedupe_key) WHERE dedupe_key IS NOT NULL AND status IN ('queued', 'running');
CREATE TRIGGER jobs_touch BEFORE UPDATE ON jobs FOR EACH ROW EXECUTE FUNCTION relay_touch_updated_at();

-- One row per (event, endpoint).  event_id is the idempotency key receivers see.
CREATE TABLE webhook_deliveries (
    id                TEXT        PRIMARY KEY,
    tenant_id         TEXT        NOT NULL REFERENCES tenants (id),
    event_id          TEXT        NOT NULL,
    event_type        TEXT        NOT NULL,                      -- spend_cap.warning | tenant.suspended | ...
    url               TEXT        NOT NULL,
    payload           JSONB       NOT NULL,
    status            TEXT        NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'delivering', 'delivered', 'failed', 'dead')),
    attempts          INT         NOT NULL DEFAULT 0,
    next_attempt_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_status_code  INT,
    last_error        TEXT,
    delivered_at      TIMESTAMPTZ,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, event_id, url)
);

CREATE INDEX idx_webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status IN ('pending', 'failed');
CREATE INDEX idx_webhook_deliveries_tenant ON webhook_deliveries (tenant_id, created_at DESC);

-- Master-key rotation re-wraps every credential's DEK in id order; the run
-- records the last id done so that a restart resumes where it stopped.
-- Platform-only: relay_app has no access.
CREATE TABLE credential_rotation_checkpoints (
    id                  TEXT        PRIMARY KEY,                 -- the rotation run
    from_master_key_id  TEXT        NOT NULL,
    to_master_key_id    TEXT        NOT NULL,
    last_credential_id  TEXT,                                    -- cursor: ids <= this are done
    rows_done           BIGINT      NOT NULL DEFAULT 0,
    status              TEXT        NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'completed', 'failed')),
    last_error          TEXT,
    started_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    completed_at        TIMESTAMPTZ,
    CHECK (from_master_key_id <> to_master_key_id)
);

CREATE TRIGGER credential_rotation_checkpoints_touch BEFORE UPDATE ON credential_rotation_checkpoints
    FOR EACH ROW EXECUTE FUNCTION relay_touch_updated_at();

SELECT relay_enable_tenant_rls('jobs');
SELECT relay_enable_tenant_rls('webhook_deliveries');
GRANT SELECT, INSERT, UPDATE, DELETE ON jobs, webhook_deliveries TO relay_app;
GRANT USAGE, SELECT ON SEQUENCE jobs_id_seq TO relay_app;
