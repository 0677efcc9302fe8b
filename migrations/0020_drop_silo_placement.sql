-- Silo placement is gone: every tenant's data lives in this database. The column only ever named a
-- database from server configuration, and no data-plane store read it.
ALTER TABLE tenants DROP COLUMN IF EXISTS silo_database;
