"""relay.admin.v1.PlanService: proto <-> ``tenancy.plan_admin.PlanAdmin``.

REST through Envoy: ``GET /v1/plans`` and ``PATCH /v1/plans/{name}``.
"""

from __future__ import annotations

import grpc

from relay_proto.relay.admin.v1 import plans_pb2, plans_pb2_grpc
from relay_server.api.admin_principal import AdminAuthenticator
from relay_server.api.admin_support import handle
from relay_server.errors import ErrorKind, RelayError
from relay_server.tenancy.calls import Call
from relay_server.tenancy.plan_admin import PlanAdmin, PlanChange, PlanRecord, quota_window

SERVICE = plans_pb2.DESCRIPTOR.services_by_name["PlanService"].full_name


def plan_message(plan: PlanRecord) -> plans_pb2.Plan:
    return plans_pb2.Plan(
        name=plan.name, features=dict(plan.features), allowed_models=list(plan.allowed_models),
        quotas=[plans_pb2.PlanQuota(resource=r, limit=v, time_window=quota_window(r)) for r, v in sorted(plan.quotas.items())],
    )  # fmt: skip


class PlanServicer(plans_pb2_grpc.PlanServiceServicer):
    def __init__(self, auth: AdminAuthenticator, admin: PlanAdmin) -> None:
        self._auth = auth
        self._admin = admin

    async def ListPlans(self, request, context):  # noqa: N802 (gRPC naming)
        async def run(call: Call) -> plans_pb2.ListPlansResponse:
            return plans_pb2.ListPlansResponse(plans=[plan_message(p) for p in await self._admin.list_plans(call)])

        return await handle(context, self._auth, run)

    async def UpdatePlan(self, request, context):  # noqa: N802
        async def run(call: Call) -> plans_pb2.UpdatePlanResponse:
            quotas: dict[str, int] = {}
            for quota in request.set_quotas:
                if quota.resource in quotas:
                    raise RelayError(ErrorKind.BAD_REQUEST, f"`{quota.resource}` is set twice.", param="set_quotas")
                quotas[quota.resource] = quota.limit
            models = list(request.allowed_models.models) if request.HasField("allowed_models") else None
            change = PlanChange(quotas, list(request.remove_quotas), dict(request.features), models)
            plan = await self._admin.update(call, request.name, change)
            return plans_pb2.UpdatePlanResponse(plan=plan_message(plan))

        return await handle(context, self._auth, run, idempotency_key=request.request_id)


def register_plan_service(server: grpc.aio.Server, auth: AdminAuthenticator, admin: PlanAdmin) -> str:
    plans_pb2_grpc.add_PlanServiceServicer_to_server(PlanServicer(auth, admin), server)
    return SERVICE
