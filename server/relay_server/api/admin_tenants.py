"""relay.admin.v1.TenantService: tenants, their members, configuration and
feature flags.  Proto ↔ the ``tenancy`` services; no rules here."""

from __future__ import annotations

from relay_proto.relay.admin.v1 import tenants_pb2 as pb
from relay_proto.relay.admin.v1 import tenants_pb2_grpc
from relay_server.api import admin_messages as m
from relay_server.api.admin_principal import AdminAuthenticator
from relay_server.api.admin_support import decode_cursor, from_timestamp, handle, limit, paged
from relay_server.errors import ErrorKind, RelayError
from relay_server.tenancy.accounts import AccountAdmin
from relay_server.tenancy.calls import Call
from relay_server.tenancy.members import MemberAdmin
from relay_server.tenancy.tenant_settings import TenantSettingsAdmin
from relay_server.tenancy.tenants import SignupRequest, TenantAdmin
from relay_server.tenancy.webhook_test import WebhookTester

_UPDATABLE = ("name", "plan", "metadata")


def _tenant_changes(request: pb.UpdateTenantRequest) -> dict[str, object]:
    tenant = request.tenant
    paths = {p.removeprefix("tenant.") for p in request.update_mask.paths}
    if not paths:  # no mask: the fields the request sets
        paths = {f for f in ("name", "plan") if getattr(tenant, f)} | ({"metadata"} if tenant.metadata else set())
    unknown = paths - set(_UPDATABLE)
    if unknown:
        raise RelayError(ErrorKind.BAD_REQUEST, f"These fields cannot be updated: {', '.join(sorted(unknown))}.", param="update_mask")
    return {p: dict(tenant.metadata) if p == "metadata" else getattr(tenant, p) for p in paths}


class TenantServicer(tenants_pb2_grpc.TenantServiceServicer):
    def __init__(
        self, auth: AdminAuthenticator, tenants: TenantAdmin, members: MemberAdmin, settings: TenantSettingsAdmin,
        accounts: AccountAdmin, webhook_test: WebhookTester,
    ) -> None:
        self._auth = auth
        self._accounts = accounts
        self._webhook_test = webhook_test
        self._tenants = tenants
        self._members = members
        self._settings = settings

    async def CreateTenant(self, request, context):  # noqa: N802 (gRPC naming)
        async def run(call: Call) -> pb.CreateTenantResponse:
            signup = await self._tenants.create(
                call,
                SignupRequest(
                    slug=request.slug,
                    name=request.name,
                    owner_email=request.owner_email,
                    plan=request.plan,
                    metadata=dict(request.metadata),
                    first_key_environment=m.environment_name(request.first_key_environment) or "",
                ),
            )
            return pb.CreateTenantResponse(
                tenant=m.tenant_message(signup.tenant),
                owner_user_id=signup.owner_user_id,
                first_api_key_id=signup.first_key_id,
                first_api_key_secret=signup.first_key_secret,
            )

        return await handle(context, self._auth, run, idempotency_key=request.request_id)

    async def GetTenant(self, request, context):  # noqa: N802
        async def run(call: Call) -> pb.GetTenantResponse:
            return pb.GetTenantResponse(tenant=m.tenant_message(await self._tenants.get(call, request.tenant_id)))

        return await handle(context, self._auth, run)

    async def ListTenants(self, request, context):  # noqa: N802
        async def run(call: Call) -> pb.ListTenantsResponse:
            rows = await self._tenants.list(
                call, status=m.tenant_status_name(request.status), after=decode_cursor(request.page_token), limit=limit(request.page_size)
            )
            rows, token = paged(rows, request.page_size, lambda r: (r.created_at, r.id))
            return pb.ListTenantsResponse(tenants=[m.tenant_message(r) for r in rows], next_page_token=token)

        return await handle(context, self._auth, run)

    async def UpdateTenant(self, request, context):  # noqa: N802
        async def run(call: Call) -> pb.UpdateTenantResponse:
            row = await self._tenants.update(call, request.tenant.id, _tenant_changes(request))
            return pb.UpdateTenantResponse(tenant=m.tenant_message(row))

        return await handle(context, self._auth, run, idempotency_key=request.request_id)

    async def TransitionTenant(self, request, context):  # noqa: N802
        async def run(call: Call) -> pb.TransitionTenantResponse:
            status = m.tenant_status_name(request.status)
            if status is None:
                raise RelayError(ErrorKind.BAD_REQUEST, "status is required.", param="status")
            row = await self._tenants.transition(call, request.tenant_id, status, request.reason)
            return pb.TransitionTenantResponse(tenant=m.tenant_message(row))

        return await handle(context, self._auth, run, idempotency_key=request.request_id)

    async def GetTenantConfig(self, request, context):  # noqa: N802
        async def run(call: Call) -> pb.GetTenantConfigResponse:
            return pb.GetTenantConfigResponse(config=await self._settings.get_config(call, request.tenant_id))

        return await handle(context, self._auth, run)

    async def UpdateTenantConfig(self, request, context):  # noqa: N802
        async def run(call: Call) -> pb.UpdateTenantConfigResponse:
            config = await self._settings.update_config(call, request.tenant_id, dict(request.config))
            return pb.UpdateTenantConfigResponse(config=config)

        return await handle(context, self._auth, run, idempotency_key=request.request_id)

    async def ListMembers(self, request, context):  # noqa: N802
        async def run(call: Call) -> pb.ListMembersResponse:
            rows = await self._members.list(call, request.tenant_id, after=decode_cursor(request.page_token), limit=limit(request.page_size))
            rows, token = paged(rows, request.page_size, lambda r: (r.created_at, r.id))
            return pb.ListMembersResponse(members=[m.member_message(r) for r in rows], next_page_token=token)

        return await handle(context, self._auth, run)

    async def AddMember(self, request, context):  # noqa: N802
        async def run(call: Call) -> pb.AddMemberResponse:
            row = await self._members.add(call, request.tenant_id, request.email, request.name, request.role)
            return pb.AddMemberResponse(member=m.member_message(row))

        return await handle(context, self._auth, run, idempotency_key=request.request_id)

    async def RemoveMember(self, request, context):  # noqa: N802
        async def run(call: Call) -> pb.RemoveMemberResponse:
            return pb.RemoveMemberResponse(member=m.member_message(await self._members.remove(call, request.tenant_id, request.user_id)))

        return await handle(context, self._auth, run, idempotency_key=request.request_id)

    async def SendTestWebhook(self, request, context):  # noqa: N802
        async def run(call: Call) -> pb.SendTestWebhookResponse:
            event_id, url = await self._webhook_test.send(call, request.tenant_id)
            return pb.SendTestWebhookResponse(event_id=event_id, url=url)

        return await handle(context, self._auth, run, idempotency_key=request.request_id)

    async def UpdateMemberRole(self, request, context):  # noqa: N802
        async def run(call: Call) -> pb.UpdateMemberRoleResponse:
            row = await self._members.set_role(call, request.tenant_id, request.user_id, request.role)
            return pb.UpdateMemberRoleResponse(member=m.member_message(row))

        return await handle(context, self._auth, run, idempotency_key=request.request_id)

    async def ListAccountMemberships(self, request, context):  # noqa: N802
        async def run(call: Call) -> pb.ListAccountMembershipsResponse:
            rows = await self._accounts.memberships(call, request.email)
            return pb.ListAccountMembershipsResponse(memberships=[
                pb.AccountMembership(
                    user_id=r["user_id"], tenant_id=r["tenant_id"], tenant_slug=r["slug"], tenant_name=r["name"],
                    tenant_status=m.TENANT_STATUS[r["status"]],  # type: ignore[arg-type]
                    role=r["role"], permissions=sorted(r["permissions"]),
                )
                for r in rows
            ])

        return await handle(context, self._auth, run)

    async def RecordSignIn(self, request, context):  # noqa: N802
        async def run(call: Call) -> pb.RecordSignInResponse:
            count = await self._accounts.record_sign_in(call, request.email, request.outcome, request.ip_address)
            return pb.RecordSignInResponse(event_count=count)

        return await handle(context, self._auth, run)

    async def RecordPasswordChange(self, request, context):  # noqa: N802
        async def run(call: Call) -> pb.RecordPasswordChangeResponse:
            count = await self._accounts.record_password_change(call, request.email, request.change, request.ip_address)
            return pb.RecordPasswordChangeResponse(event_count=count)

        return await handle(context, self._auth, run)

    async def ListTenantFeatures(self, request, context):  # noqa: N802
        async def run(call: Call) -> pb.ListTenantFeaturesResponse:
            states = await self._settings.features(call, request.tenant_id)
            return pb.ListTenantFeaturesResponse(features=[m.feature_message(s) for s in states])

        return await handle(context, self._auth, run)

    async def SetFeatureOverride(self, request, context):  # noqa: N802
        async def run(call: Call) -> pb.SetFeatureOverrideResponse:
            state = await self._settings.set_override(
                call, request.tenant_id, request.feature, request.enabled, request.reason, from_timestamp(request, "expire_time")
            )
            return pb.SetFeatureOverrideResponse(feature=m.feature_message(state))

        return await handle(context, self._auth, run, idempotency_key=request.request_id)

    async def DeleteFeatureOverride(self, request, context):  # noqa: N802
        async def run(call: Call) -> pb.DeleteFeatureOverrideResponse:
            state = await self._settings.delete_override(call, request.tenant_id, request.feature)
            return pb.DeleteFeatureOverrideResponse(feature=m.feature_message(state))

        return await handle(context, self._auth, run, idempotency_key=request.request_id)
