"""Relay's web console, served behind Envoy at /dashboard.

Server-rendered HTML (aiohttp + Jinja2).  Everything a page shows or changes
about a tenant goes through the public admin API with the generated Python SDK
over gRPC, as the signed-in person: a member's calls carry an HS256 dashboard
JWT, so the server's RBAC decides.  The console's own state (accounts,
sessions, invitation and reset links) lives in its tables (migration 0024).
"""
