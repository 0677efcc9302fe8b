-- Tenancy: idempotent admin calls.
--
-- Every mutating admin call writes an audit row in the same transaction as
-- its change, carrying the caller's request_id when one was given.  A retry
-- with the same request_id finds that row and returns the resource it names
-- instead of acting twice, so the audit log doubles as the idempotency record.
CREATE INDEX idx_audit_log_request ON audit_log (request_id, action) WHERE request_id IS NOT NULL;
