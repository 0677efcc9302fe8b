"""The request's steps, in order: authenticate, catalog, admission (limits, spend), cache, meter."""
