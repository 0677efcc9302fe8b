"""The types every layer shares: requests and principals, keys, catalog entries, policies, usage and cost.

Pure values and protocols, no I/O: this package imports nothing of Relay above it, so storage,
providers, observability and the pipeline can all depend on it without depending on each other.
"""
