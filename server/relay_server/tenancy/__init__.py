"""Tenants, their keys, users, roles, lifecycle, configuration and audit.

The domain layer behind ``relay.admin.v1`` Tenant/ApiKey/AuditLog services
and the background jobs of the tenant lifecycle.  Servicers in ``api/`` only
translate protos to the calls here.
"""
