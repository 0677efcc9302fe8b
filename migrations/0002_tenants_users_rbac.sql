-- Tenants, their dashboard users, role-based access control and the audit log.
--
-- Tables that hold rows of one tenant carry tenant_id, even where it could be
-- derived through a join (role_permissions, user_roles): row-level security
-- needs it on the row, and composite foreign keys (tenant_id, x_id) make it
-- impossible for a row of tenant A to point at an object of tenant B, because
-- foreign-key checks themselves do not go through row-level security.

CREATE TABLE tenants (
    id                 TEXT        PRIMARY KEY,                  -- ten_abc123
    slug               TEXT        NOT NULL UNIQUE,              -- acme
    name               TEXT        NOT NULL,                     -- Acme Inc.
    plan               TEXT        NOT NULL DEFAULT 'free'
                       CHECK (plan IN ('free', 'starter', 'pro', 'enterprise')),
    -- The single source of truth for what a tenant may do.  Transitions are
    -- enforced by the lifecycle state machine in code; the CHECK only keeps
    -- the vocabulary closed.
    status             TEXT        NOT NULL DEFAULT 'provisioning'
                       CHECK (status IN ('provisioning', 'trial', 'active', 'suspended', 'expired', 'deleted')),
    status_changed_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    trial_ends_at      TIMESTAMPTZ,
    stripe_customer_id TEXT        UNIQUE,
    -- NULL: the shared database.  Otherwise the name of a configured database
    -- this tenant lives in (silo model); never a DSN, which is a secret.
    silo_database      TEXT,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    deleted_at         TIMESTAMPTZ,
    metadata           JSONB,
    CHECK (slug ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    CHECK ((status = 'deleted') = (deleted_at IS NOT NULL))
);

CREATE INDEX idx_tenants_status ON tenants (status, status_changed_at);
-- Lifecycle jobs look for trials that ended.
CREATE INDEX idx_tenants_trial_ends ON tenants (trial_ends_at) WHERE status = 'trial';
CREATE TRIGGER tenants_touch BEFORE UPDATE ON tenants FOR EACH ROW EXECUTE FUNCTION relay_touch_updated_at();

CREATE TABLE users (
    id             TEXT        PRIMARY KEY,
    tenant_id      TEXT        NOT NULL REFERENCES tenants (id),
    email          TEXT        NOT NULL,
    name           TEXT,
    password_hash  TEXT,                                          -- NULL for SSO-only users
    role           TEXT        NOT NULL DEFAULT 'member'
                   CHECK (role IN ('owner', 'admin', 'developer', 'member', 'viewer')),
    status         TEXT        NOT NULL DEFAULT 'active'
                   CHECK (status IN ('active', 'invited', 'disabled', 'deleted')),
    last_login_at  TIMESTAMPTZ,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    deleted_at     TIMESTAMPTZ,
    UNIQUE (tenant_id, email),
    UNIQUE (tenant_id, id)
);

CREATE INDEX idx_users_email ON users (email);
CREATE TRIGGER users_touch BEFORE UPDATE ON users FOR EACH ROW EXECUTE FUNCTION relay_touch_updated_at();

CREATE TABLE roles (
    id          TEXT        PRIMARY KEY,
    tenant_id   TEXT        NOT NULL REFERENCES tenants (id),
    name        TEXT        NOT NULL,                            -- owner | admin | developer | viewer | custom
    description TEXT,
    is_system   BOOLEAN     NOT NULL DEFAULT false,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name),
    UNIQUE (tenant_id, id)
);

-- Global vocabulary: resource x action.  Seeded by a later migration.
CREATE TABLE permissions (
    id          TEXT PRIMARY KEY,                                -- api_keys:create
    resource    TEXT NOT NULL,                                   -- api_keys | usage | billing | members | settings | ...
    action      TEXT NOT NULL CHECK (action IN ('create', 'read', 'update', 'delete')),
    description TEXT,
    UNIQUE (resource, action),
    CHECK (id = resource || ':' || action)
);

CREATE TABLE role_permissions (
    tenant_id     TEXT NOT NULL REFERENCES tenants (id),
    role_id       TEXT NOT NULL,
    permission_id TEXT NOT NULL REFERENCES permissions (id),
    PRIMARY KEY (role_id, permission_id),
    FOREIGN KEY (tenant_id, role_id) REFERENCES roles (tenant_id, id) ON DELETE CASCADE
);

CREATE INDEX idx_role_permissions_tenant ON role_permissions (tenant_id);

CREATE TABLE user_roles (
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    user_id   TEXT NOT NULL,
    role_id   TEXT NOT NULL,
    PRIMARY KEY (user_id, role_id),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, role_id) REFERENCES roles (tenant_id, id) ON DELETE CASCADE
);

CREATE INDEX idx_user_roles_tenant ON user_roles (tenant_id);
CREATE INDEX idx_user_roles_role ON user_roles (role_id);

-- tenant_id NULL: a platform-level action (no tenant).  Those rows are never
-- visible to relay_app; platform tooling reads them through the system pool.
CREATE TABLE audit_log (
    id            TEXT        PRIMARY KEY,
    tenant_id     TEXT        REFERENCES tenants (id),
    actor_id      TEXT        NOT NULL,
    actor_type    TEXT        NOT NULL CHECK (actor_type IN ('user', 'api_key', 'platform_admin', 'system')),
    action        TEXT        NOT NULL,                          -- api_key.created | api_key.revoked | member.removed
    resource_id   TEXT,
    resource_type TEXT,
    metadata      JSONB,
    ip_address    INET,
    request_id    TEXT,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX idx_audit_log_tenant ON audit_log (tenant_id, created_at DESC);
CREATE INDEX idx_audit_log_actor  ON audit_log (actor_id, created_at DESC);

SELECT relay_enable_tenant_rls('tenants', 'id');
SELECT relay_enable_tenant_rls('users');
SELECT relay_enable_tenant_rls('roles');
SELECT relay_enable_tenant_rls('role_permissions');
SELECT relay_enable_tenant_rls('user_roles');
SELECT relay_enable_tenant_rls('audit_log');

-- A tenant may read its own row and rename itself; plan, status, billing and
-- placement change only through the system pool (lifecycle, billing, admin).
GRANT SELECT ON tenants TO relay_app;
GRANT UPDATE (name, metadata) ON tenants TO relay_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON users, roles, role_permissions, user_roles TO relay_app;
GRANT SELECT ON permissions TO relay_app;
-- The audit log is append-only for the application.
GRANT SELECT, INSERT ON audit_log TO relay_app;
