"""Relay SDK: typed gRPC stubs for the Relay gateway (generated from protos/)."""
