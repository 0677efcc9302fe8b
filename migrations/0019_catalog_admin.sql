-- The catalog as operators edit it: aliases, and the models a plan may call.
--
-- An alias is one more name that resolves to a model (e.g. `gpt-4o-latest`
-- -> gpt-4o): requests, prices and the request log use the model it names.
-- Aliases share the namespace of models.relay_name; the admin API refuses an
-- alias equal to a model's name (a model's own name always wins on lookup).
CREATE TABLE model_aliases (
    alias       TEXT        PRIMARY KEY CHECK (alias <> ''),
    model_id    TEXT        NOT NULL REFERENCES models (id) ON DELETE CASCADE,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX idx_model_aliases_model ON model_aliases (model_id);

-- The models a plan may call.  A plan with no rows here may call every model;
-- a plan with rows may call only those.  What a request may call is the
-- intersection of the plan's list, the tenant's `allowed_models` config and
-- the API key's own list (each empty list meaning "no restriction").
CREATE TABLE plan_models (
    plan        TEXT        NOT NULL CHECK (plan IN ('free', 'starter', 'pro', 'enterprise')),
    model_id    TEXT        NOT NULL REFERENCES models (id) ON DELETE CASCADE,
    PRIMARY KEY (plan, model_id)
);

GRANT SELECT ON model_aliases, plan_models, model_routes TO relay_app;
