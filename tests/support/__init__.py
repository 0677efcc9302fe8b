"""Helpers shared by the test suites (real services, no mocks)."""
