"""Tests of the Python SDK (relay_sdk) against an in-process gRPC server."""
