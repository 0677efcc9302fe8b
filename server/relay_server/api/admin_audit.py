"""relay.admin.v1.AuditLogService: a tenant's audit events, newest first.

Tenant principals read their own tenant's log (``audit_log:read``).  Platform
operators name a tenant, or leave ``tenant_id`` empty for platform actions
(hard deletions), which no tenant can see.
"""

from __future__ import annotations

from relay_proto.relay.admin.v1 import audit_pb2, audit_pb2_grpc
from relay_server.api import admin_messages as m
from relay_server.api.admin_principal import AdminAuthenticator
from relay_server.api.admin_support import decode_cursor, handle, limit, paged
from relay_server.errors import ErrorKind, RelayError
from relay_server.tenancy.audit import AuditLog
from relay_server.tenancy.calls import Call


class AuditLogServicer(audit_pb2_grpc.AuditLogServiceServicer):
    def __init__(self, auth: AdminAuthenticator, audit: AuditLog) -> None:
        self._auth = auth
        self._audit = audit

    async def ListAuditEvents(self, request, context):  # noqa: N802 (gRPC naming)
        async def run(call: Call) -> audit_pb2.ListAuditEventsResponse:
            principal = call.principal
            principal.require("audit_log:read")
            after, size = decode_cursor(request.page_token), limit(request.page_size)
            action, resource_id = request.action or None, request.resource_id or None
            if request.all_tenants:
                principal.require_platform("list every tenant's audit events")
                if request.tenant_id:
                    raise RelayError(ErrorKind.BAD_REQUEST, "all_tenants and tenant_id cannot be combined.", param="tenant_id")
            platform_events = principal.is_platform and not request.tenant_id
            tenant_id = None if platform_events else principal.tenant_scope(request.tenant_id)
            rows = await self._audit.events(
                tenant_id, after=after, limit=size, action=action, resource_id=resource_id, every_tenant=request.all_tenants
            )
            rows, token = paged(rows, request.page_size, lambda r: (r.created_at, r.id))
            return audit_pb2.ListAuditEventsResponse(events=[m.audit_message(r) for r in rows], next_page_token=token)

        return await handle(context, self._auth, run)
