"""The request path: one module per step (authenticate, limits, spend, cache, route, stream, meter)."""
