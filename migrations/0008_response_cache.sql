-- Response cache: exact-match entries (keyed by the request hash) and, where
-- pgvector is available, semantic entries (searched by embedding).
--
-- Without pgvector the table exists without the `embedding` column; code asks
-- relay_semantic_cache_available() before offering the semantic cache.

CREATE TABLE response_cache (
    id              TEXT        PRIMARY KEY,
    tenant_id       TEXT        NOT NULL REFERENCES tenants (id),
    environment     TEXT        NOT NULL DEFAULT 'live' CHECK (environment IN ('live', 'test')),
    cache_key       TEXT        NOT NULL,                        -- exact-match hash (model + messages + params)
    model_id        TEXT        NOT NULL REFERENCES models (id),
    request_hash    TEXT        NOT NULL,
    response_body   JSONB       NOT NULL,
    input_tokens    INT         NOT NULL,
    output_tokens   INT         NOT NULL,
    hit_count       INT         NOT NULL DEFAULT 0,
    last_hit_at     TIMESTAMPTZ,
    expires_at      TIMESTAMPTZ NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, cache_key)
);

CREATE INDEX idx_response_cache_expires ON response_cache (expires_at);

DO $$
BEGIN
    IF relay_try_enable_vector() THEN
        -- 1536 = text-embedding-3-small, the lookup model.
        ALTER TABLE response_cache ADD COLUMN embedding vector(1536);
        CREATE INDEX idx_response_cache_embedding ON response_cache
            USING hnsw (embedding vector_cosine_ops)
            WHERE embedding IS NOT NULL;
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION relay_semantic_cache_available()
RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (
        SELECT 1 FROM pg_attribute
        WHERE attrelid = 'response_cache'::regclass AND attname = 'embedding' AND NOT attisdropped)
$$;

SELECT relay_enable_tenant_rls('response_cache');
GRANT SELECT, INSERT, UPDATE, DELETE ON response_cache TO relay_app;
