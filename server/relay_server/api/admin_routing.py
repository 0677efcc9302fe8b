"""relay.admin.v1.RoutingService: proto <-> ``catalog.routing_admin.RoutingAdmin``.

REST through Envoy: ``/v1/routing/virtual-models``, ``/v1/routing/budget-routes`` and
``PUT /v1/routing/providers/{provider_id}/region`` (docs/routing.md).
"""

from __future__ import annotations

import grpc

from relay_proto.relay.admin.v1 import routing_pb2, routing_pb2_grpc
from relay_server.api.admin_principal import AdminAuthenticator
from relay_server.api.admin_support import handle
from relay_server.catalog.routing_admin import RoutingAdmin, parse_threshold
from relay_server.domain.routing import BudgetRoute, Target, VirtualModel
from relay_server.tenancy.calls import Call

SERVICE = routing_pb2.DESCRIPTOR.services_by_name["RoutingService"].full_name


def vm_message(vm: VirtualModel) -> routing_pb2.VirtualModel:
    return routing_pb2.VirtualModel(
        id=vm.id, name=vm.name, tenant_id=vm.tenant_id or "", strategy=vm.strategy, fallbacks=list(vm.fallbacks),
        targets=[routing_pb2.RouteTarget(model=t.model, provider_id=t.provider_id or "", weight=t.weight) for t in vm.targets],
    )  # fmt: skip


def rule_message(rule: BudgetRoute) -> routing_pb2.BudgetRoute:
    return routing_pb2.BudgetRoute(
        id=rule.id, tenant_id=rule.tenant_id, key_id=rule.key_id or "", alias=rule.alias, route_to=rule.route_to,
        threshold_percent=f"{rule.threshold_bp / 100:g}",
    )  # fmt: skip


class RoutingServicer(routing_pb2_grpc.RoutingServiceServicer):
    def __init__(self, auth: AdminAuthenticator, admin: RoutingAdmin) -> None:
        self._auth = auth
        self._admin = admin

    async def ListVirtualModels(self, request, context):  # noqa: N802 (gRPC naming)
        async def run(call: Call) -> routing_pb2.ListVirtualModelsResponse:
            found = await self._admin.list_virtual_models(call, request.tenant_id)
            return routing_pb2.ListVirtualModelsResponse(virtual_models=[vm_message(v) for v in found])

        return await handle(context, self._auth, run)

    async def UpsertVirtualModel(self, request, context):  # noqa: N802
        m = request.virtual_model

        async def run(call: Call) -> routing_pb2.UpsertVirtualModelResponse:
            draft = VirtualModel(
                "", m.name, m.tenant_id.strip() or None, m.strategy.strip() or "priority",
                tuple(Target(t.model, t.provider_id or None, t.weight) for t in m.targets), tuple(m.fallbacks),
            )  # fmt: skip
            return routing_pb2.UpsertVirtualModelResponse(virtual_model=vm_message(await self._admin.upsert_virtual_model(call, draft)))

        return await handle(context, self._auth, run, idempotency_key=request.request_id)

    async def DeleteVirtualModel(self, request, context):  # noqa: N802
        async def run(call: Call) -> routing_pb2.DeleteVirtualModelResponse:
            await self._admin.delete_virtual_model(call, request.tenant_id, request.name)
            return routing_pb2.DeleteVirtualModelResponse()

        return await handle(context, self._auth, run, idempotency_key=request.request_id)

    async def ListBudgetRoutes(self, request, context):  # noqa: N802
        async def run(call: Call) -> routing_pb2.ListBudgetRoutesResponse:
            found = await self._admin.list_budget_routes(call, request.tenant_id)
            return routing_pb2.ListBudgetRoutesResponse(budget_routes=[rule_message(r) for r in found])

        return await handle(context, self._auth, run)

    async def UpsertBudgetRoute(self, request, context):  # noqa: N802
        r = request.budget_route

        async def run(call: Call) -> routing_pb2.UpsertBudgetRouteResponse:
            draft = BudgetRoute("", r.tenant_id, r.key_id or None, r.alias, r.route_to, parse_threshold(r.threshold_percent))
            return routing_pb2.UpsertBudgetRouteResponse(budget_route=rule_message(await self._admin.upsert_budget_route(call, draft)))

        return await handle(context, self._auth, run, idempotency_key=request.request_id)

    async def DeleteBudgetRoute(self, request, context):  # noqa: N802
        async def run(call: Call) -> routing_pb2.DeleteBudgetRouteResponse:
            await self._admin.delete_budget_route(call, request.tenant_id, request.key_id, request.alias)
            return routing_pb2.DeleteBudgetRouteResponse()

        return await handle(context, self._auth, run, idempotency_key=request.request_id)

    async def SetProviderRegion(self, request, context):  # noqa: N802
        async def run(call: Call) -> routing_pb2.SetProviderRegionResponse:
            region = await self._admin.set_provider_region(call, request.provider_id, request.region)
            return routing_pb2.SetProviderRegionResponse(provider_id=request.provider_id, region=region or "")

        return await handle(context, self._auth, run, idempotency_key=request.request_id)


def register_routing_service(server: grpc.aio.Server, auth: AdminAuthenticator, admin: RoutingAdmin) -> str:
    routing_pb2_grpc.add_RoutingServiceServicer_to_server(RoutingServicer(auth, admin), server)
    return SERVICE



