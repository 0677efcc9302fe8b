-- Smarter routing (docs/routing.md): virtual models, budget-aware routes, data
-- residency, and what the request log records about the route taken.

-- Where a provider (and optionally one model route over it) processes data.
-- NULL: no declared region; a tenant restricted to regions never reaches it.
ALTER TABLE providers ADD COLUMN region TEXT CHECK (region IS NULL OR region ~ '^[a-z0-9-]{1,32}$');
ALTER TABLE model_routes ADD COLUMN region TEXT CHECK (region IS NULL OR region ~ '^[a-z0-9-]{1,32}$');

-- With supports_functions and supports_vision, what virtual models check before
-- sending a request to a target (tools, vision, json_schema response_format).
ALTER TABLE models ADD COLUMN supports_json_schema BOOLEAN NOT NULL DEFAULT false;
UPDATE models SET supports_json_schema = true WHERE provider_id = 'openai' AND kind = 'chat';

-- A virtual model ("fast", "smart"): a name that resolves to targets (a catalog
-- model, optionally pinned to one provider route) with a strategy.  tenant_id
-- NULL: global, every tenant sees it; a tenant's own alias of the same name wins.
-- targets: [{"model": "...", "provider_id": "..." | null, "weight": 1}]
-- fallbacks: names (models or virtual models) tried after every target.
CREATE TABLE virtual_models (
    id          TEXT        PRIMARY KEY,
    tenant_id   TEXT        REFERENCES tenants (id) ON DELETE CASCADE,
    name        TEXT        NOT NULL,
    strategy    TEXT        NOT NULL CHECK (strategy IN ('priority', 'weighted', 'lowest-latency', 'lowest-cost')),
    targets     JSONB       NOT NULL,
    fallbacks   TEXT[]      NOT NULL DEFAULT '{}',
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX idx_virtual_models_name ON virtual_models (COALESCE(tenant_id, ''), name);

-- Budget-aware routing: at or above threshold_bp (basis points: 9000 = 90 %) of
-- the tenant's (key_id NULL) or the key's monthly spend cap, `alias` is served
-- by `route_to` instead.  Evaluated from the Redis spend state of the caps.
CREATE TABLE budget_routes (
    id            TEXT        PRIMARY KEY,
    tenant_id     TEXT        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    key_id        TEXT        REFERENCES api_keys (id) ON DELETE CASCADE,
    alias         TEXT        NOT NULL,
    route_to      TEXT        NOT NULL,
    threshold_bp  INTEGER     NOT NULL CHECK (threshold_bp > 0 AND threshold_bp <= 10000),
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX idx_budget_routes_scope ON budget_routes (tenant_id, COALESCE(key_id, ''), alias);

-- Read by the workers through the owner pool (like the catalog: global virtual models have no
-- tenant); a tenant-scoped connection sees and writes only its own rows.
SELECT relay_enable_tenant_rls('virtual_models');
SELECT relay_enable_tenant_rls('budget_routes');
GRANT SELECT, INSERT, UPDATE, DELETE ON virtual_models, budget_routes TO relay_app;

-- What the request log says about the route: the virtual model asked for, the
-- target that answered (model@provider) and why it was chosen.
ALTER TABLE requests ADD COLUMN route_alias TEXT;
ALTER TABLE requests ADD COLUMN route_target TEXT;
ALTER TABLE requests ADD COLUMN route_reason TEXT;
