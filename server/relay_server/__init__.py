"""Relay: a multi-tenant, OpenAI-compatible LLM API gateway (gRPC server)."""
