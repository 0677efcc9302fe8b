-- The request archiver's manifest: one row per Parquet file written for a
-- (monthly partition, tenant).  A row's state follows the archiver's steps:
--
--   verified  the file exists and matches the partition's rows of that tenant
--             (row count and content checksum, computed on both sides);
--             Postgres still serves these rows
--   detached  the partition left `requests` in the same transaction that set
--             this state, so every row is visible exactly once: queries read
--             the file from then on
--   archived  the detached table is dropped
--
-- Queries read only `detached` / `archived` files, so a file written or
-- verified by a run that then crashed is never read twice.  tenant_id makes
-- the tenant's hard delete remove these rows (storage/postgres/purge.py); its
-- files are removed by the same job (docs/archival.md).
CREATE TABLE request_archive_files (
    partition_name  TEXT         NOT NULL,             -- requests_y2026m01
    month           DATE         NOT NULL,             -- first day of the UTC month
    tenant_id       TEXT         NOT NULL REFERENCES tenants (id),
    path            TEXT         NOT NULL,             -- relative to RELAY_ARCHIVE_URL
    row_count       BIGINT       NOT NULL CHECK (row_count >= 0),
    bytes           BIGINT       NOT NULL CHECK (bytes >= 0),
    checksum        TEXT         NOT NULL,             -- md5 over (id, cost_micros) ordered by id
    file_sha256     TEXT         NOT NULL,
    state           TEXT         NOT NULL CHECK (state IN ('verified', 'detached', 'archived')),
    created_at      TIMESTAMPTZ  NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ  NOT NULL DEFAULT now(),
    PRIMARY KEY (partition_name, tenant_id)
);

CREATE INDEX idx_request_archive_files_tenant ON request_archive_files (tenant_id, month);

-- Tenant-scoped like every tenant table: a tenant's session sees only its own
-- files (the cold query path lists files through it).
SELECT relay_enable_tenant_rls('request_archive_files');
GRANT SELECT ON request_archive_files TO relay_app;
