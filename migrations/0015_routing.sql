-- Routing: more than one provider may serve a catalog model.
--
-- models.provider_id / provider_name stay the model's primary route; each
-- row here adds another provider that serves the same model under its own
-- name (e.g. a Llama model on Groq and on a self-hosted OpenAI-compatible
-- server).  The router tries a model's routes in provider priority order
-- (route.priority overrides the provider's), skipping providers whose
-- circuit is open, and prices every route at the model's catalog price.
CREATE TABLE model_routes (
    model_id      TEXT        NOT NULL REFERENCES models (id) ON DELETE CASCADE,
    provider_id   TEXT        NOT NULL REFERENCES providers (id),
    provider_name TEXT        NOT NULL,                          -- the name this provider accepts
    priority      INT,                                           -- NULL = the provider's priority
    status        TEXT        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (model_id, provider_id)
);

CREATE INDEX idx_model_routes_provider ON model_routes (provider_id);

GRANT SELECT ON model_routes TO relay_app;
