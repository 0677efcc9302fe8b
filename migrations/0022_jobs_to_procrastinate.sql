-- Jobs still waiting in Relay's own queue (`jobs`, 0009) move to procrastinate's (0023); then the
-- old table goes. Finished jobs are history only and are not carried over.
--
-- kind → task and queue; dedupe_key → queueing lock and lock; tenant_id and payload → args;
-- run_after → scheduled_at; attempts carry over. A job that was running had lost its worker by
-- the time this runs (the upgrade restarts every process): it waits again.
INSERT INTO procrastinate_jobs (queue_name, task_name, lock, queueing_lock, args, scheduled_at, attempts)
SELECT j.kind, j.kind, j.dedupe_key,
       -- only one waiting job may hold a queueing lock: the oldest keeps it
       CASE WHEN row_number() OVER (PARTITION BY j.dedupe_key ORDER BY j.id) = 1 THEN j.dedupe_key END,
       jsonb_build_object('tenant_id', j.tenant_id, 'payload', j.payload),
       j.run_after, j.attempts
  FROM jobs j
 WHERE j.status IN ('queued', 'running')
 ORDER BY j.id;

DROP TABLE jobs;
