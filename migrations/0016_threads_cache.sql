-- Threads and the response cache: two indexes for their hot queries.
--
-- The stream cleanup worker looks for replies still 'streaming' long after
-- they began (their writer died and its lease was lost); only a handful of
-- rows are ever in that state, so a partial index keeps the sweep from
-- scanning the whole message history.
CREATE INDEX idx_thread_messages_streaming ON thread_messages (created_at) WHERE status = 'streaming';

-- A semantic cache lookup compares embeddings only within one scope (tenant,
-- environment, model and the hash of the request without its last user
-- message, kept in request_hash).  Scopes are small, so the planner can
-- fetch a scope by this index and rank it by exact cosine distance instead
-- of filtering the HNSW index's nearest rows after the fact.
CREATE INDEX idx_response_cache_scope ON response_cache (tenant_id, environment, model_id, request_hash);
