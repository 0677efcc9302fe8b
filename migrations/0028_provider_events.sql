-- Provider health events an operator can list (ListProviderEvents), not only
-- the health monitor's status changes: circuit transitions, failure bursts and
-- anomaly detections land in the same table, told apart by `kind`.
--
-- Rows are written off the request path (a per-process buffer flushed every
-- second, relay_server/observability/provider_events.py) and kept for
-- RELAY_PROVIDER_EVENTS_RETENTION_DAYS (a periodic sweep deletes older ones).

ALTER TABLE provider_health_events
    ADD COLUMN kind TEXT NOT NULL DEFAULT 'status_changed' CHECK (kind IN (
        'status_changed', 'circuit_opened', 'circuit_half_open', 'circuit_closed', 'failure_burst', 'anomaly')),
    -- anomalies: error_rate | latency (one row per provider and signal, however many workers detect it)
    ADD COLUMN signal TEXT,
    ALTER COLUMN status DROP NOT NULL,
    -- a status change says which status; the other kinds are not statuses
    ADD CONSTRAINT provider_health_events_status_of_kind CHECK (kind <> 'status_changed' OR status IS NOT NULL);

-- Every provider's events, newest first (the operator page's default), and the retention sweep.
CREATE INDEX idx_provider_health_events_time ON provider_health_events (created_at DESC, id DESC);
