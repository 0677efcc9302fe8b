"""Registers the tenancy admin services (TenantService, ApiKeyService,
AuditLogService, ThreadBrowserService) on a server; ``relay_server.app`` calls ``register_admin_services``."""

from __future__ import annotations

from typing import Any

import grpc

from relay_proto.relay.admin.v1 import (
    api_keys_pb2,
    api_keys_pb2_grpc,
    audit_pb2,
    audit_pb2_grpc,
    tenants_pb2,
    tenants_pb2_grpc,
    threads_pb2,
)
from relay_server.api.admin_api_keys import ApiKeyServicer
from relay_server.api.admin_audit import AuditLogServicer
from relay_server.api.admin_principal import AdminAuthenticator
from relay_server.api.admin_support import parse_proxies
from relay_server.api.admin_tenants import TenantServicer
from relay_server.api.admin_threads import register_thread_browser

SERVICES = (
    tenants_pb2.DESCRIPTOR.services_by_name["TenantService"].full_name,
    api_keys_pb2.DESCRIPTOR.services_by_name["ApiKeyService"].full_name,
    audit_pb2.DESCRIPTOR.services_by_name["AuditLogService"].full_name,
    threads_pb2.DESCRIPTOR.services_by_name["ThreadBrowserService"].full_name,
)


def admin_authenticator(app: Any) -> AdminAuthenticator:
    settings = app.settings
    return AdminAuthenticator(
        settings.admin_token,
        keys=app.tenancy.authenticator,
        members=app.tenancy.member_permissions,
        jwt_secret=settings.jwt_secret,
        jwt_issuer=settings.jwt_issuer,
        trusted_proxies=parse_proxies(settings.trusted_proxies),
    )


def register_admin_services(server: grpc.aio.Server, app: Any) -> list[str]:
    """Add the four services; returns their fully-qualified names (for reflection and health)."""
    tenancy = app.tenancy
    auth = admin_authenticator(app)
    tenants_pb2_grpc.add_TenantServiceServicer_to_server(
        TenantServicer(auth, tenancy.tenants, tenancy.members, tenancy.tenant_settings, tenancy.accounts,
                       tenancy.webhook_test), server
    )
    api_keys_pb2_grpc.add_ApiKeyServiceServicer_to_server(ApiKeyServicer(auth, tenancy.keys), server)
    audit_pb2_grpc.add_AuditLogServiceServicer_to_server(AuditLogServicer(auth, tenancy.audit), server)
    register_thread_browser(server, auth, tenancy.thread_browser)
    return list(SERVICES)
