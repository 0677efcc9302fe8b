-- Stored responses of the OpenAI Responses API (POST /v1/responses with store: true, the
-- default).  Relay owns the ids: a response names the one it continues
-- (previous_response_id) and the conversation for the next turn is rebuilt by walking that
-- chain, so whichever provider serves the next turn receives the whole history.
--
-- No foreign key on previous_response_id: a turn may outlive (or be deleted before) the one it
-- continues; a broken chain is reported when someone tries to continue it.  expires_at is
-- created_at + the tenant's response_retention_days (tenant_config, default 30); reads ignore
-- expired rows and the retention sweep deletes them.
CREATE TABLE responses (
    id                    TEXT        PRIMARY KEY,                 -- resp_...
    tenant_id             TEXT        NOT NULL REFERENCES tenants (id),
    api_key_id            TEXT,
    end_user_id           TEXT,
    previous_response_id  TEXT,
    model                 TEXT        NOT NULL,
    status                TEXT        NOT NULL CHECK (status IN ('queued', 'in_progress', 'completed', 'incomplete', 'failed', 'cancelled')),
    background            BOOLEAN     NOT NULL DEFAULT false,
    -- The whole response object as the API returns it (parameters echoed, output, usage, error).
    body                  JSONB       NOT NULL,
    request_id            TEXT,                                    -- the requests row that served it
    created_at            TIMESTAMPTZ NOT NULL DEFAULT now(),
    completed_at          TIMESTAMPTZ,
    expires_at            TIMESTAMPTZ NOT NULL,
    UNIQUE (tenant_id, id)
);

CREATE INDEX idx_responses_expiry ON responses (expires_at);
CREATE INDEX idx_responses_previous ON responses (tenant_id, previous_response_id) WHERE previous_response_id IS NOT NULL;

-- The input items of one response, in order (GET /v1/responses/{id}/input_items pages them).
CREATE TABLE response_input_items (
    tenant_id    TEXT    NOT NULL REFERENCES tenants (id),
    response_id  TEXT    NOT NULL,
    position     INT     NOT NULL CHECK (position >= 0),
    id           TEXT    NOT NULL,
    item         JSONB   NOT NULL,
    PRIMARY KEY (response_id, position),
    FOREIGN KEY (tenant_id, response_id) REFERENCES responses (tenant_id, id) ON DELETE CASCADE
);

SELECT relay_enable_tenant_rls('responses');
SELECT relay_enable_tenant_rls('response_input_items');
GRANT SELECT, INSERT, UPDATE, DELETE ON responses, response_input_items TO relay_app;
