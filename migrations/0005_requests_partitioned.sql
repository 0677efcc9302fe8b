-- One row per API call Relay processes: the source of truth for billing,
-- debugging and usage dashboards.
--
-- Partitioned by month on created_at (UTC months), so old months can be
-- detached and archived whole.  The primary key must contain the partition
-- key, hence (id, created_at): writers set created_at themselves (the
-- request's start) so that a replayed write hits the same key and
-- ON CONFLICT DO NOTHING makes it idempotent.
--
-- model_id and provider_id are NULL when the request failed before a model or
-- provider was chosen (unknown model, nothing available); requested_model
-- keeps what the client asked for.  credential_id is NULL in test mode and on
-- cache hits.

CREATE TABLE requests (
    id                  TEXT          NOT NULL,                  -- req_abc123
    created_at          TIMESTAMPTZ   NOT NULL DEFAULT now(),
    tenant_id           TEXT          NOT NULL REFERENCES tenants (id),
    api_key_id          TEXT          NOT NULL,
    environment         TEXT          NOT NULL DEFAULT 'live' CHECK (environment IN ('live', 'test')),
    end_user_id         TEXT,
    requested_model     TEXT,
    model_id            TEXT          REFERENCES models (id),
    provider_id         TEXT          REFERENCES providers (id),
    credential_id       TEXT          REFERENCES provider_credentials (id),

    request_type        TEXT          NOT NULL CHECK (request_type IN ('chat', 'completion', 'embedding')),
    stream              BOOLEAN       NOT NULL DEFAULT false,

    input_tokens        INT,
    output_tokens       INT,
    total_tokens        INT,
    cache_read_tokens   INT,
    cache_write_tokens  INT,

    -- Provider cost in USD (the spec's columns) ...
    input_cost          NUMERIC(12,8),
    output_cost         NUMERIC(12,8),
    total_cost          NUMERIC(12,8),
    markup_rate         NUMERIC(5,4)  NOT NULL DEFAULT 0.20,
    relay_revenue       NUMERIC(12,8),
    -- ... and what the tenant is billed (provider cost + markup) in micro-USD:
    -- the integer that spend caps and usage-by-key count.
    cost_micros         BIGINT,

    started_at          TIMESTAMPTZ   NOT NULL,
    first_token_at      TIMESTAMPTZ,
    completed_at        TIMESTAMPTZ,
    latency_ms          INT,
    ttft_ms             INT,

    status              TEXT          NOT NULL
                        CHECK (status IN ('success', 'error', 'cached', 'timeout', 'cancelled')),
    error_code          TEXT,
    error_message       TEXT,
    http_status         INT,
    attempts            INT           NOT NULL DEFAULT 1 CHECK (attempts >= 0),

    cache_hit           BOOLEAN       NOT NULL DEFAULT false,
    cache_kind          TEXT          CHECK (cache_kind IN ('exact', 'semantic')),
    cache_key           TEXT,

    request_metadata    JSONB,

    PRIMARY KEY (id, created_at),
    FOREIGN KEY (tenant_id, api_key_id) REFERENCES api_keys (tenant_id, id)
) PARTITION BY RANGE (created_at);

CREATE INDEX idx_requests_tenant_created  ON requests (tenant_id, created_at DESC);
CREATE INDEX idx_requests_model_created   ON requests (model_id, created_at DESC);
CREATE INDEX idx_requests_api_key_created ON requests (api_key_id, created_at DESC);
CREATE INDEX idx_requests_status          ON requests (status, created_at DESC);
CREATE INDEX idx_requests_end_user        ON requests (tenant_id, end_user_id, created_at DESC)
    WHERE end_user_id IS NOT NULL;

-- Rows for months that have no partition yet land here, so an insert never
-- fails for want of a partition.  relay_create_request_partition moves them
-- out when their month's partition is made.
CREATE TABLE requests_default PARTITION OF requests DEFAULT;

-- Row-level security on the parent covers queries through it; partitions get
-- the same policies (and no grants to relay_app) so that reaching a partition
-- by name is no way around them.
SELECT relay_enable_tenant_rls('requests');
SELECT relay_enable_tenant_rls('requests_default');
GRANT SELECT, INSERT, UPDATE, DELETE ON requests TO relay_app;

-- Create the partition for the UTC month containing `month` (idempotent).
-- Rows of that month already sitting in the default partition are moved in.
CREATE OR REPLACE FUNCTION relay_create_request_partition(month date)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    lo    timestamptz := make_timestamptz(extract(year FROM month)::int, extract(month FROM month)::int, 1, 0, 0, 0, 'UTC');
    hi    timestamptz := lo + interval '1 month';
    part  text        := format('requests_y%sm%s', to_char(month, 'YYYY'), to_char(month, 'MM'));
BEGIN
    -- Workers on several hosts may call this at once.
    PERFORM pg_advisory_xact_lock(hashtext('relay_create_request_partition'));
    IF to_regclass(part) IS NOT NULL THEN
        RETURN part;
    END IF;
    EXECUTE format('CREATE TABLE %I (LIKE requests INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part);
    EXECUTE format(
        'WITH moved AS (DELETE FROM requests_default WHERE created_at >= $1 AND created_at < $2 RETURNING *) '
        'INSERT INTO %I SELECT * FROM moved', part) USING lo, hi;
    EXECUTE format('ALTER TABLE requests ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', part, lo, hi);
    PERFORM relay_enable_tenant_rls(part::regclass);
    RETURN part;
END
$$;

-- The current UTC month and `months_ahead` after it.  The archiver job calls
-- this regularly; the default partition covers any gap.
CREATE OR REPLACE FUNCTION relay_ensure_request_partitions(months_ahead int DEFAULT 1)
RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    this_month date := date_trunc('month', now() AT TIME ZONE 'UTC')::date;
BEGIN
    FOR i IN 0..months_ahead LOOP
        RETURN NEXT relay_create_request_partition((this_month + make_interval(months => i))::date);
    END LOOP;
END
$$;

REVOKE EXECUTE ON FUNCTION relay_create_request_partition(date) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION relay_ensure_request_partitions(int) FROM PUBLIC;

SELECT relay_ensure_request_partitions(1);
