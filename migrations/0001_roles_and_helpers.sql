-- The application role and the helpers every later migration uses.
--
-- relay_app is the role tenant-scoped queries run as.  It never owns a table
-- and never bypasses row-level security, so the policies below always apply
-- to it.  The role that runs migrations owns every table.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'relay_app') THEN
        CREATE ROLE relay_app LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS NOREPLICATION;
    END IF;
    -- The role may pre-exist (a DBA made it, or another Relay database in the
    -- same cluster did): refuse to go on if it could defeat RLS.
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'relay_app' AND (rolsuper OR rolbypassrls)) THEN
        RAISE EXCEPTION 'role relay_app must be NOSUPERUSER NOBYPASSRLS';
    END IF;
    IF current_user = 'relay_app' THEN
        RAISE EXCEPTION 'migrations must not run as relay_app: it would own the tables and bypass RLS';
    END IF;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO relay_app', current_database());
END
$$;

GRANT USAGE ON SCHEMA public TO relay_app;

-- Turn on row-level security for a tenant-scoped table.
--
-- * ENABLE + FORCE: FORCE makes the table owner subject to policies too, so
--   owner access is an explicit policy (owner_access) rather than a silent bypass.
-- * tenant_isolation applies to every role (PUBLIC): a role added later for
--   reporting is confined by default.  current_setting(..., true) is NULL when
--   the setting was never made and '' after a transaction that set it ended;
--   both match no row.
-- * owner_access lets the table's owner (the system pool: workers, platform
--   admin, API-key lookup by hash) see every row.
CREATE OR REPLACE FUNCTION relay_enable_tenant_rls(tbl regclass, tenant_column name DEFAULT 'tenant_id')
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    owner_role name;
BEGIN
    SELECT pg_get_userbyid(relowner) INTO owner_role FROM pg_class WHERE oid = tbl;
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', tbl);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', tbl);
    EXECUTE format('DROP POLICY IF EXISTS tenant_isolation ON %s', tbl);
    EXECUTE format(
        'CREATE POLICY tenant_isolation ON %s USING (%I = current_setting(''app.tenant_id'', true)) '
        'WITH CHECK (%I = current_setting(''app.tenant_id'', true))',
        tbl, tenant_column, tenant_column);
    EXECUTE format('DROP POLICY IF EXISTS owner_access ON %s', tbl);
    EXECUTE format('CREATE POLICY owner_access ON %s TO %I USING (true) WITH CHECK (true)', tbl, owner_role);
END
$$;

-- Try to make pgvector available; true when it is.  The extension is not
-- "trusted", so a non-superuser owner can only use it when an administrator
-- created it beforehand; without it Relay runs with the exact cache only.
CREATE OR REPLACE FUNCTION relay_try_enable_vector()
RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'vector') THEN
        RETURN true;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'vector') THEN
        RAISE NOTICE 'pgvector is not installed on this server: semantic columns are skipped';
        RETURN false;
    END IF;
    BEGIN
        CREATE EXTENSION IF NOT EXISTS vector;
        RETURN true;
    EXCEPTION WHEN insufficient_privilege THEN
        RAISE NOTICE 'no privilege to CREATE EXTENSION vector: semantic columns are skipped';
        RETURN false;
    END;
END
$$;

REVOKE EXECUTE ON FUNCTION relay_enable_tenant_rls(regclass, name) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION relay_try_enable_vector() FROM PUBLIC;

-- Keeps updated_at honest without every UPDATE statement remembering it.
CREATE OR REPLACE FUNCTION relay_touch_updated_at()
RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;
