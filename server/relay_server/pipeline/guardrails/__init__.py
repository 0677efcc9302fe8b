"""Per-tenant guardrails on the request path (docs/guardrails.md): input limits, PII, deny lists and
prompt-injection patterns, a tenant's classifier, and output redaction and validation."""
