-- Guardrail decisions of a request (docs/guardrails.md): a JSON array of
-- {"guardrail": "pii.email", "stage": "input" | "output", "action": "block" | "redact" | "flag" | ..., "count": n}.
-- NULL when no guardrail decided anything (every request of a tenant without guardrails).
ALTER TABLE requests ADD COLUMN guardrails JSONB;
