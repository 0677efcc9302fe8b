"""``relay routing …``: virtual models, budget routes and provider regions (docs/routing.md).

Same conventions as ``relay tenants``: ``RELAY_GRPC_ADDR`` and ``RELAY_ADMIN_TOKEN``
(or ``--addr`` / ``--token``), a table or ``--json``, the server's error and exit 1.

    relay routing vm-set fast --strategy weighted --target gpt-4o-mini:3 --target llama-3.1-8b-instant@groq:1
    relay routing budget-set smart --tenant ten_… --route-to cheap --threshold 90
    relay routing region-set openai us-east
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from relay_server.settings import Settings

STRATEGIES = ("priority", "weighted", "lowest-latency", "lowest-cost")


def register(sub: argparse._SubParsersAction) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--addr", help="gRPC address (default RELAY_GRPC_ADDR, else the server's)")
    common.add_argument("--token", help="admin token (default RELAY_ADMIN_TOKEN)")
    common.add_argument("--json", action="store_true", help="print the response as JSON")
    common.add_argument("--tenant", default="", help="the tenant (empty: global virtual models)")
    routing = sub.add_parser("routing", help="virtual models, budget routes, provider regions").add_subparsers(
        dest="action", required=True
    )
    routing.add_parser("vm-list", parents=[common])
    p = routing.add_parser("vm-set", parents=[common], help="create or replace a virtual model")
    p.add_argument("name")
    p.add_argument("--strategy", choices=STRATEGIES, default="priority")
    p.add_argument("--target", action="append", required=True, help="model[@provider][:weight], repeatable")
    p.add_argument("--fallback", action="append", default=[], help="a model or virtual model, repeatable")
    p = routing.add_parser("vm-delete", parents=[common])
    p.add_argument("name")
    routing.add_parser("budget-list", parents=[common])
    p = routing.add_parser("budget-set", parents=[common], help="at or above --threshold %% of the cap, route ALIAS elsewhere")
    p.add_argument("alias")
    p.add_argument("--route-to", required=True)
    p.add_argument("--threshold", required=True, help="percent of the cap, e.g. 90 or 99.5")
    p.add_argument("--key", default="", help="a key's own rule (read against the key's cap)")
    p = routing.add_parser("budget-delete", parents=[common])
    p.add_argument("alias")
    p.add_argument("--key", default="")
    p = routing.add_parser("region-set", parents=[common], help="the region a provider processes data in")
    p.add_argument("provider_id")
    p.add_argument("region", nargs="?", default="", help="empty: none")


def parse_target(text: str, pb: Any) -> Any:
    """``model[@provider][:weight]`` → RouteTarget."""
    spec, _, weight = text.rpartition(":") if text.rpartition(":")[2].isdigit() else (text, "", "")
    model, _, provider = spec.partition("@")
    return pb.RouteTarget(model=model, provider_id=provider, weight=int(weight or 0))


def run(args: argparse.Namespace, settings: Settings) -> int:
    import grpc  # noqa: PLC0415  (keep `relay --help` fast)

    from relay_proto.relay.admin.v1 import routing_pb2 as pb  # noqa: PLC0415
    from relay_proto.relay.admin.v1 import routing_pb2_grpc  # noqa: PLC0415

    token = args.token or settings.admin_token
    if not token:
        print("error: no admin token (set RELAY_ADMIN_TOKEN or pass --token)", file=sys.stderr)
        return 2
    metadata = (("authorization", f"Bearer {token}"),)
    with grpc.insecure_channel(args.addr or settings.grpc_addr or settings.grpc_address) as channel:
        stub = routing_pb2_grpc.RoutingServiceStub(channel)
        a = args.action
        try:
            if a == "vm-list":
                response: Any = stub.ListVirtualModels(pb.ListVirtualModelsRequest(tenant_id=args.tenant), metadata=metadata, timeout=30)
                rows = [_vm_row(v) for v in response.virtual_models]
            elif a == "vm-set":
                vm = pb.VirtualModel(name=args.name, tenant_id=args.tenant, strategy=args.strategy,
                                     targets=[parse_target(t, pb) for t in args.target], fallbacks=args.fallback)  # fmt: skip
                response = stub.UpsertVirtualModel(pb.UpsertVirtualModelRequest(virtual_model=vm), metadata=metadata, timeout=30)
                rows = [_vm_row(response.virtual_model)]
            elif a == "vm-delete":
                response = stub.DeleteVirtualModel(pb.DeleteVirtualModelRequest(name=args.name, tenant_id=args.tenant), metadata=metadata, timeout=30)
                rows = []
            elif a == "budget-list":
                response = stub.ListBudgetRoutes(pb.ListBudgetRoutesRequest(tenant_id=args.tenant), metadata=metadata, timeout=30)
                rows = [_rule_row(r) for r in response.budget_routes]
            elif a == "budget-set":
                rule = pb.BudgetRoute(alias=args.alias, route_to=args.route_to, threshold_percent=args.threshold,
                                      tenant_id=args.tenant, key_id=args.key)  # fmt: skip
                response = stub.UpsertBudgetRoute(pb.UpsertBudgetRouteRequest(budget_route=rule), metadata=metadata, timeout=30)
                rows = [_rule_row(response.budget_route)]
            elif a == "budget-delete":
                delete = pb.DeleteBudgetRouteRequest(alias=args.alias, tenant_id=args.tenant, key_id=args.key)
                response = stub.DeleteBudgetRoute(delete, metadata=metadata, timeout=30)
                rows = []
            else:
                region = pb.SetProviderRegionRequest(provider_id=args.provider_id, region=args.region)
                response = stub.SetProviderRegion(region, metadata=metadata, timeout=30)
                rows = [[response.provider_id, response.region or "-"]]
        except grpc.RpcError as exc:
            return _report(exc, args.json)
    if args.json:
        from google.protobuf.json_format import MessageToDict  # noqa: PLC0415

        print(json.dumps(MessageToDict(response, preserving_proto_field_name=True), indent=2, sort_keys=True))
    elif a.startswith("vm-") and a != "vm-delete":
        _table(["NAME", "TENANT", "STRATEGY", "TARGETS", "FALLBACKS"], rows)
    elif a.startswith("budget-") and a != "budget-delete":
        _table(["ALIAS", "KEY", "THRESHOLD", "ROUTE TO"], rows)
    elif a == "region-set":
        _table(["PROVIDER", "REGION"], rows)
    else:
        print("deleted")
    return 0


def _vm_row(v: Any) -> list[str]:
    targets = ", ".join(f"{t.model}{'@' + t.provider_id if t.provider_id else ''}:{t.weight}" for t in v.targets)
    return [v.name, v.tenant_id or "(global)", v.strategy, targets, ", ".join(v.fallbacks) or "-"]


def _rule_row(r: Any) -> list[str]:
    return [r.alias, r.key_id or "(tenant)", f"{r.threshold_percent}%", r.route_to]


def _report(exc: Any, as_json: bool) -> int:
    body = dict(exc.trailing_metadata() or ()).get("x-relay-error")
    print(body if as_json and body else f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
    return 1


def _table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    for line in [headers, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
