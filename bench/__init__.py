"""Relay's performance harness (see bench/README.md)."""
