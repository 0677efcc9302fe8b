"""Observability: the request context every log line carries, Prometheus metrics,
OpenTelemetry traces and provider anomaly detection (docs/observability.md)."""
