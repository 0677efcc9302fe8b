"""``relay providers …`` and ``relay plans …``: the providers' operator settings
and the plans' quotas, features and allowed models (platform operators).

Same conventions as ``relay tenants``: ``RELAY_GRPC_ADDR`` and ``RELAY_ADMIN_TOKEN``
(or ``--addr`` / ``--token``), a table or ``--json``, the server's error and exit 1.

    relay providers list
    relay providers update groq --priority 5 --status disabled
    relay plans list
    relay plans update starter --quota rpm=600 --quota requests_per_day=unlimited --remove-quota tpm --feature webhooks=on
    relay plans update free --models gpt-4o-mini,claude-3-5-haiku     (--all-models lifts the restriction)
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from relay_server.settings import Settings

_ON = {"on": True, "true": True, "yes": True, "off": False, "false": False, "no": False}


def register(sub: argparse._SubParsersAction) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--addr", help="gRPC address (default RELAY_GRPC_ADDR, else the server's)")
    common.add_argument("--token", help="admin token (default RELAY_ADMIN_TOKEN)")
    common.add_argument("--json", action="store_true", help="print the response as JSON")
    providers = sub.add_parser("providers", help="providers: base URL, priority, region, status").add_subparsers(
        dest="action", required=True
    )
    providers.add_parser("list", parents=[common])
    p = providers.add_parser("update", parents=[common], help="change the settings given (the others stay)")
    p.add_argument("provider_id")
    p.add_argument("--name")
    p.add_argument("--base-url")
    p.add_argument("--priority", type=int, help="lower is tried first")
    p.add_argument("--region", help="where it processes data; empty: none")
    p.add_argument("--status", choices=("active", "disabled"), help="disabled: never routed to")
    plans = sub.add_parser("plans", help="plans: quotas and features").add_subparsers(dest="action", required=True)
    plans.add_parser("list", parents=[common])
    p = plans.add_parser("update", parents=[common], help="set or remove quotas, set features")
    p.add_argument("name", help="free | starter | pro | enterprise")
    p.add_argument("--quota", action="append", default=[], help="resource=limit (rpm, tpm, requests_per_day; limit or unlimited)")
    p.add_argument("--remove-quota", action="append", default=[], help="a resource the plan stops limiting")
    p.add_argument("--feature", action="append", default=[], help="feature=on|off, repeatable")
    models = p.add_mutually_exclusive_group()
    models.add_argument("--models", help="the only catalog models the plan may call, comma-separated (replaces the list)")
    models.add_argument("--all-models", action="store_true", help="lift the plan's model restriction")


def _quota(text: str, pb: Any) -> Any:
    resource, _, limit = text.partition("=")
    if limit == "unlimited":
        return pb.PlanQuota(resource=resource, limit=-1)
    try:
        return pb.PlanQuota(resource=resource, limit=int(limit))
    except ValueError:
        raise SystemExit(f"error: --quota {text!r}: expected resource=limit (a whole number or unlimited)") from None


def _feature(text: str) -> tuple[str, bool]:
    feature, _, value = text.partition("=")
    if value.lower() not in _ON:
        raise SystemExit(f"error: --feature {text!r}: expected feature=on or feature=off")
    return feature, _ON[value.lower()]


def run(args: argparse.Namespace, settings: Settings) -> int:
    import grpc  # noqa: PLC0415  (keep `relay --help` fast)
    from google.protobuf import field_mask_pb2  # noqa: PLC0415

    from relay_proto.relay.admin.v1 import catalog_pb2, catalog_pb2_grpc, plans_pb2, plans_pb2_grpc  # noqa: PLC0415

    token = args.token or settings.admin_token
    if not token:
        print("error: no admin token (set RELAY_ADMIN_TOKEN or pass --token)", file=sys.stderr)
        return 2
    metadata = (("authorization", f"Bearer {token}"),)
    with grpc.insecure_channel(args.addr or settings.grpc_addr or settings.grpc_address) as channel:
        try:
            if args.command == "providers":
                stub: Any = catalog_pb2_grpc.ModelCatalogServiceStub(channel)
                if args.action == "list":
                    response: Any = stub.ListProviders(catalog_pb2.ListProvidersRequest(), metadata=metadata, timeout=30)
                    rows = [_provider_row(p) for p in response.providers]
                else:
                    given = {"name": args.name, "base_url": args.base_url, "priority": args.priority,
                             "region": args.region, "status": args.status}  # fmt: skip
                    mask = [k for k, v in given.items() if v is not None]
                    if not mask:
                        print("error: nothing to update (--name, --base-url, --priority, --region, --status)", file=sys.stderr)
                        return 2
                    provider = catalog_pb2.Provider(id=args.provider_id, **{k: v for k, v in given.items() if v is not None})
                    request = catalog_pb2.UpdateProviderRequest(provider=provider, update_mask=field_mask_pb2.FieldMask(paths=mask))
                    response = stub.UpdateProvider(request, metadata=metadata, timeout=30)
                    rows = [_provider_row(response.provider)]
            else:
                stub = plans_pb2_grpc.PlanServiceStub(channel)
                if args.action == "list":
                    response = stub.ListPlans(plans_pb2.ListPlansRequest(), metadata=metadata, timeout=30)
                    rows = [_plan_row(p) for p in response.plans]
                else:
                    update = plans_pb2.UpdatePlanRequest(
                        name=args.name, set_quotas=[_quota(q, plans_pb2) for q in args.quota], remove_quotas=args.remove_quota,
                        features=dict(_feature(f) for f in args.feature),
                    )  # fmt: skip
                    if args.models is not None or args.all_models:
                        update.allowed_models.SetInParent()  # given: replaces the list (empty: every model)
                        update.allowed_models.models.extend(m.strip() for m in (args.models or "").split(",") if m.strip())
                    response = stub.UpdatePlan(update, metadata=metadata, timeout=30)
                    rows = [_plan_row(response.plan)]
        except grpc.RpcError as exc:
            return _report(exc, args.json)
    if args.json:
        from google.protobuf.json_format import MessageToDict  # noqa: PLC0415

        print(json.dumps(MessageToDict(response, preserving_proto_field_name=True), indent=2, sort_keys=True))
    elif args.command == "providers":
        _table(["ID", "NAME", "API", "STATUS", "PRIORITY", "REGION", "CIRCUIT", "BASE URL"], rows)
    else:
        _table(["PLAN", "QUOTAS", "FEATURES", "MODELS"], rows)
    return 0


def _report(exc: Any, as_json: bool) -> int:
    body = dict(exc.trailing_metadata() or ()).get("x-relay-error")
    print(body if as_json and body else f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
    return 1


def _provider_row(p: Any) -> list[str]:
    return [p.id, p.name, p.api, p.status, str(p.priority), p.region or "-", p.circuit_state or "-", p.base_url]


def _plan_row(p: Any) -> list[str]:
    quotas = ", ".join(f"{q.resource}={'unlimited' if q.limit == -1 else q.limit}" for q in p.quotas) or "-"
    features = ", ".join(sorted(f for f, on in p.features.items() if on)) or "-"
    return [p.name, quotas, features, ", ".join(p.allowed_models) or "(all)"]


def _table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    for line in [headers, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
