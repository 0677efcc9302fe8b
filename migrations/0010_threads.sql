-- Threads: persisted conversations with per-thread ordering, idempotent
-- appends and content as blocks (text, image, tool_use, tool_result).
--
-- Sequencing: a writer takes the next number with
--   UPDATE threads SET next_seq = next_seq + 1 WHERE id = $1 RETURNING next_seq
-- whose row lock serialises concurrent appends to one thread (two browser
-- tabs) without serialising different threads.  UNIQUE (thread_id, seq)
-- backs it up.  Dedup: the client's Idempotency-Key is stored per thread;
-- a retried append conflicts on it and returns the existing message.

CREATE TABLE threads (
    id              TEXT        PRIMARY KEY,                     -- thr_...
    tenant_id       TEXT        NOT NULL REFERENCES tenants (id),
    end_user_id     TEXT,                                        -- scope for B2B tenants' end users
    api_key_id      TEXT,                                        -- the key that created it
    title           TEXT,
    metadata        JSONB,
    next_seq        INT         NOT NULL DEFAULT 0,              -- last sequence number handed out
    message_count   INT         NOT NULL DEFAULT 0,
    total_tokens    BIGINT      NOT NULL DEFAULT 0,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    deleted_at      TIMESTAMPTZ,
    UNIQUE (tenant_id, id),
    FOREIGN KEY (tenant_id, api_key_id) REFERENCES api_keys (tenant_id, id)
);

CREATE INDEX idx_threads_tenant_created ON threads (tenant_id, created_at DESC, id DESC);
CREATE INDEX idx_threads_end_user ON threads (tenant_id, end_user_id, created_at DESC, id DESC)
    WHERE end_user_id IS NOT NULL;
CREATE TRIGGER threads_touch BEFORE UPDATE ON threads FOR EACH ROW EXECUTE FUNCTION relay_touch_updated_at();

CREATE TABLE thread_messages (
    id               TEXT        PRIMARY KEY,                    -- msg_...
    tenant_id        TEXT        NOT NULL REFERENCES tenants (id),
    thread_id        TEXT        NOT NULL,
    seq              INT         NOT NULL CHECK (seq > 0),
    role             TEXT        NOT NULL CHECK (role IN ('system', 'user', 'assistant', 'tool')),
    content          JSONB       NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(content) = 'array'),
    idempotency_key  TEXT,
    -- The requests row that produced an assistant message.  No foreign key:
    -- requests is partitioned and keyed by (id, created_at).
    request_id       TEXT,
    model_id         TEXT        REFERENCES models (id),
    input_tokens     INT,
    output_tokens    INT,
    -- 'streaming' while an assistant reply is being produced; a reconnecting
    -- client replays what is stored and follows the rest.
    status           TEXT        NOT NULL DEFAULT 'complete' CHECK (status IN ('streaming', 'complete', 'failed')),
    error            TEXT,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    completed_at     TIMESTAMPTZ,
    UNIQUE (thread_id, seq),
    UNIQUE (thread_id, idempotency_key),
    FOREIGN KEY (tenant_id, thread_id) REFERENCES threads (tenant_id, id) ON DELETE CASCADE
);

CREATE INDEX idx_thread_messages_tenant ON thread_messages (tenant_id, created_at DESC);
CREATE INDEX idx_thread_messages_request ON thread_messages (request_id) WHERE request_id IS NOT NULL;

-- Semantic search over history, where pgvector is available.
DO $$
BEGIN
    IF relay_try_enable_vector() THEN
        ALTER TABLE thread_messages ADD COLUMN embedding vector(1536);
        CREATE INDEX idx_thread_messages_embedding ON thread_messages
            USING hnsw (embedding vector_cosine_ops)
            WHERE embedding IS NOT NULL;
    END IF;
END
$$;

SELECT relay_enable_tenant_rls('threads');
SELECT relay_enable_tenant_rls('thread_messages');
GRANT SELECT, INSERT, UPDATE, DELETE ON threads, thread_messages TO relay_app;
