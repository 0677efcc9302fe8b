"""``relay tenants …`` and ``relay keys …``: operator commands over gRPC.

They talk to ``RELAY_GRPC_ADDR`` (default: the server's own address) with
the platform admin token (``RELAY_ADMIN_TOKEN``), through the generated
``relay_proto`` stubs.  Output is a table for people and, with ``--json``, the
response as JSON (proto field names) for scripts.  Failures print the
server's error and exit 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from relay_server.settings import Settings

_ENVS: dict[str, Any] = {"live": 1, "test": 2}
_SCOPES: dict[str, Any] = {"inference": 1, "management": 2}
_KEY_STATUS: dict[str, Any] = {"active": 1, "revoked": 2, "expired": 3}
_WINDOWS: dict[str, Any] = {"daily": 1, "monthly": 2, "total": 3}
_TENANT_STATUS: dict[str, Any] = {s: i + 1 for i, s in enumerate(("provisioning", "trial", "active", "suspended", "expired", "deleted"))}


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``tenants`` and ``keys`` command groups to ``relay``'s parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--addr", help="gRPC address (default RELAY_GRPC_ADDR, else the server's)")
    common.add_argument("--token", help="admin token (default RELAY_ADMIN_TOKEN)")
    common.add_argument("--json", action="store_true", help="print the response as JSON")

    tenants = sub.add_parser("tenants", help="administer tenants").add_subparsers(dest="action", required=True)
    p = tenants.add_parser("create", parents=[common], help="sign a tenant up (returns at once unless --wait; provisioning follows)")
    p.add_argument("--slug", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--owner-email", required=True)
    p.add_argument("--plan", default="")
    p.add_argument("--first-key-env", choices=sorted(_ENVS), default="test")
    p.add_argument("--request-id", default="")
    p.add_argument("--wait", action="store_true", help="return once provisioning has finished (the tenant can have keys)")
    p.add_argument("--wait-timeout", type=float, default=60.0, help="seconds --wait waits at most (default 60)")
    p = tenants.add_parser("list", parents=[common])
    p.add_argument("--status", choices=sorted(_TENANT_STATUS))
    p.add_argument("--page-size", type=int, default=50)
    p.add_argument("--page-token", default="")
    p = tenants.add_parser("get", parents=[common])
    p.add_argument("tenant_id")
    p = tenants.add_parser("transition", parents=[common], help="move a tenant through its lifecycle")
    p.add_argument("tenant_id")
    p.add_argument("status", choices=sorted(_TENANT_STATUS))
    p.add_argument("--reason", default="")
    p = tenants.add_parser("guardrails", parents=[common], help="show or set a tenant's guardrails policy (docs/guardrails.md)")
    p.add_argument("tenant_id")
    p.add_argument("--set", dest="policy", help="the policy: JSON, or @file.json")
    p.add_argument("--clear", action="store_true", help="remove the policy (every guardrail off)")

    p = tenants.add_parser(
        "move-to-silo", help="move a tenant's data plane to a silo database (logical replication, a short write pause)"
    )
    p.add_argument("tenant_id")
    p.add_argument("--silo", required=True, help="a name from RELAY_SILO_DATABASES")
    p.add_argument("--pause-s", type=float, default=5.0, help="longest write pause for the final delta (default 5)")
    p.add_argument("--catchup-timeout", type=float, default=300.0, help="seconds to wait for the copy to catch up")
    p.add_argument("--purge-pool", action="store_true", help="delete the tenant's data-plane rows from the pool afterwards")
    p.add_argument("--json", action="store_true")

    keys = sub.add_parser("keys", help="administer API keys").add_subparsers(dest="action", required=True)
    p = keys.add_parser("create", parents=[common], help="mint a key (the secret is printed once)")
    p.add_argument("--tenant", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--env", choices=sorted(_ENVS), default="live")
    p.add_argument("--scope", choices=sorted(_SCOPES), default="inference")
    p.add_argument("--end-user", default="")
    p.add_argument("--models", default="", help="comma-separated allowed models")
    p.add_argument("--spend-cap", default="", help="USD, e.g. 10.00")
    p.add_argument("--spend-window", choices=sorted(_WINDOWS))
    p.add_argument("--expires", default="", help="ISO 8601 time")
    p = keys.add_parser("list", parents=[common])
    p.add_argument("--tenant", required=True)
    p.add_argument("--status", choices=sorted(_KEY_STATUS))
    p.add_argument("--end-user", default="")
    p.add_argument("--page-size", type=int, default=50)
    p.add_argument("--page-token", default="")
    for action in ("get", "revoke", "rotate"):
        p = keys.add_parser(action, parents=[common])
        p.add_argument("--tenant", required=True)
        p.add_argument("key_id")
        if action == "rotate":
            p.add_argument("--grace-seconds", type=int, default=0, help="old secret validity (0: server default)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "tenants" and args.action == "move-to-silo":
        return _move_to_silo(args, settings)
    import grpc  # noqa: PLC0415  (keep `relay --help` fast)

    addr = args.addr or settings.grpc_addr or settings.grpc_address
    token = args.token or settings.admin_token
    if not token:
        print("error: no admin token (set RELAY_ADMIN_TOKEN or pass --token)", file=sys.stderr)
        return 2
    with grpc.insecure_channel(addr) as channel:
        call = _tenant_action if args.command == "tenants" else _key_action
        try:
            response, render = call(channel, args)(metadata=(("authorization", f"Bearer {token}"),), timeout=30)
        except (grpc.RpcError, _WaitTimeout) as exc:
            return _report(exc, args.json)
    if args.json:
        from google.protobuf.json_format import MessageToDict  # noqa: PLC0415

        print(json.dumps(MessageToDict(response, preserving_proto_field_name=True), indent=2, sort_keys=True))
    else:
        render(response)
    return 0


def _move_to_silo(args: argparse.Namespace, settings: Settings) -> int:
    """Runs here, against the databases (a move outlives any RPC deadline); audited in the pool."""
    import asyncio  # noqa: PLC0415

    from relay_server.tenancy.silo_move import MoveError, move_with_settings  # noqa: PLC0415

    options = {"pause_s": args.pause_s, "catchup_timeout_s": args.catchup_timeout, "purge_pool": args.purge_pool}
    try:
        report = asyncio.run(move_with_settings(settings, args.tenant_id, args.silo, **options))
    except (MoveError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    tables: dict[str, dict[str, Any]] = {t: {"rows": s.rows, "checksum": s.checksum} for t, s in report.sums.items()}
    if args.json:
        print(json.dumps({"tenant_id": report.tenant_id, "silo": report.silo, "pause_s": round(report.pause_s, 3),
                          "tables": tables, "purged_pool": report.purged_pool}, indent=2, sort_keys=True))  # fmt: skip
    else:
        print(f"tenant {report.tenant_id} now lives in silo {report.silo} (write pause {report.pause_s:.2f} s)")
        _table(["TABLE", "ROWS", "CHECKSUM"], [[t, str(v["rows"]), v["checksum"]] for t, v in tables.items()])
    return 0


def _report(exc: Any, as_json: bool) -> int:
    trailers = dict(exc.trailing_metadata() or ())
    body = trailers.get("x-relay-error")
    if as_json and body:
        print(body, file=sys.stderr)
    else:
        print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
    return 1


Invoker = Callable[..., tuple[Any, Callable[[Any], None]]]


def _tenant_action(channel: Any, args: argparse.Namespace) -> Invoker:
    from relay_proto.relay.admin.v1 import tenants_pb2 as pb  # noqa: PLC0415
    from relay_proto.relay.admin.v1 import tenants_pb2_grpc  # noqa: PLC0415

    stub = tenants_pb2_grpc.TenantServiceStub(channel)
    if args.action == "create":
        request: Any = pb.CreateTenantRequest(
            slug=args.slug, name=args.name, owner_email=args.owner_email, plan=args.plan,
            first_key_environment=_ENVS[args.first_key_env], request_id=args.request_id,
        )  # fmt: skip

        def created(r: Any) -> None:
            _tenant_table([r.tenant])
            print(f"\nowner user: {r.owner_user_id}\nfirst key:  {r.first_api_key_id} (works once the tenant is in trial)")
            if r.first_api_key_secret:
                print(f"secret:     {r.first_api_key_secret}   (shown once: store it now)")

        def create(**kw: Any) -> tuple[Any, Callable[[Any], None]]:
            response = stub.CreateTenant(request, **kw)
            if args.wait:
                response.tenant.CopyFrom(_wait_provisioned(stub, response.tenant.id, args.wait_timeout, kw["metadata"]))
            return response, created

        return create
    if args.action == "list":
        request = pb.ListTenantsRequest(page_size=args.page_size, page_token=args.page_token, status=_TENANT_STATUS.get(args.status or "", 0))
        return lambda **kw: (stub.ListTenants(request, **kw), lambda r: _tenant_table(r.tenants, r.next_page_token))
    if args.action == "get":
        return lambda **kw: (stub.GetTenant(pb.GetTenantRequest(tenant_id=args.tenant_id), **kw), lambda r: _tenant_table([r.tenant]))
    if args.action == "guardrails":
        return _guardrails(stub, pb, args)
    request = pb.TransitionTenantRequest(tenant_id=args.tenant_id, status=_TENANT_STATUS[args.status], reason=args.reason)
    return lambda **kw: (stub.TransitionTenant(request, **kw), lambda r: _tenant_table([r.tenant]))


def _guardrails(stub: Any, pb: Any, args: argparse.Namespace) -> Invoker:
    """Read or write the ``guardrails`` tenant config entry (validated and audited by the server)."""
    if args.policy is None and not args.clear:
        def shown(r: Any) -> None:
            print(json.dumps(json.loads(r.config.get("guardrails") or "{}"), indent=2))

        return lambda **kw: (stub.GetTenantConfig(pb.GetTenantConfigRequest(tenant_id=args.tenant_id), **kw), shown)
    value = ""
    if not args.clear:
        value = Path(args.policy[1:]).read_text() if args.policy.startswith("@") else args.policy
    request = pb.UpdateTenantConfigRequest(tenant_id=args.tenant_id, config={"guardrails": value})
    return lambda **kw: (stub.UpdateTenantConfig(request, **kw), lambda _r: print("guardrails updated"))


def _wait_provisioned(stub: Any, tenant_id: str, timeout_s: float, metadata: Any) -> Any:
    """Poll the tenant until it leaves PROVISIONING (bounded by ``timeout_s``); the tenant as it is then."""
    import grpc  # noqa: PLC0415

    from relay_proto.relay.admin.v1 import tenants_pb2 as pb  # noqa: PLC0415

    deadline = time.monotonic() + timeout_s
    while True:
        tenant = stub.GetTenant(pb.GetTenantRequest(tenant_id=tenant_id), metadata=metadata, timeout=30).tenant
        if tenant.status != _TENANT_STATUS["provisioning"]:
            return tenant
        if time.monotonic() >= deadline:
            raise _WaitTimeout(grpc.StatusCode.DEADLINE_EXCEEDED, f"tenant {tenant_id} still provisioning after {timeout_s:g} s")
        time.sleep(0.2)


class _WaitTimeout(Exception):
    """Shaped like a grpc.RpcError for ``_report``."""

    def __init__(self, code: Any, details: str) -> None:
        super().__init__(details)
        self._code, self._details = code, details

    def code(self) -> Any:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[()]:
        return ()


def _key_action(channel: Any, args: argparse.Namespace) -> Invoker:
    from relay_proto.relay.admin.v1 import api_keys_pb2 as pb  # noqa: PLC0415
    from relay_proto.relay.admin.v1 import api_keys_pb2_grpc  # noqa: PLC0415

    stub = api_keys_pb2_grpc.ApiKeyServiceStub(channel)
    if args.action == "create":
        key = pb.ApiKey(
            name=args.name, environment=_ENVS[args.env], scope=_SCOPES[args.scope], end_user_id=args.end_user,
            allowed_models=[m.strip() for m in args.models.split(",") if m.strip()],
        )  # fmt: skip
        if args.spend_cap:
            key.spend_cap.CopyFrom(pb.SpendCap(amount_usd=args.spend_cap, window=_WINDOWS.get(args.spend_window or "", 0)))
        if args.expires:
            key.expire_time.FromDatetime(_parse_time(args.expires))
        request: Any = pb.CreateApiKeyRequest(tenant_id=args.tenant, api_key=key)

        def created(r: Any) -> None:
            _key_table([r.api_key])
            print(f"\nsecret: {r.secret}   (shown once: store it now)")

        return lambda **kw: (stub.CreateApiKey(request, **kw), created)
    if args.action == "list":
        request = pb.ListApiKeysRequest(
            tenant_id=args.tenant, page_size=args.page_size, page_token=args.page_token,
            status=_KEY_STATUS.get(args.status or "", 0), end_user_id=args.end_user,
        )  # fmt: skip
        return lambda **kw: (stub.ListApiKeys(request, **kw), lambda r: _key_table(r.api_keys, r.next_page_token))
    if args.action == "get":
        request = pb.GetApiKeyRequest(tenant_id=args.tenant, key_id=args.key_id)
        return lambda **kw: (stub.GetApiKey(request, **kw), lambda r: _key_table([r.api_key]))
    if args.action == "revoke":
        request = pb.RevokeApiKeyRequest(tenant_id=args.tenant, key_id=args.key_id)
        return lambda **kw: (stub.RevokeApiKey(request, **kw), lambda r: _key_table([r.api_key]))
    request = pb.RotateApiKeyRequest(tenant_id=args.tenant, key_id=args.key_id, grace_period_seconds=args.grace_seconds)

    def rotated(r: Any) -> None:
        _key_table([r.api_key])
        print(f"\nsecret: {r.secret}   (shown once: store it now)")
        print(f"old secret valid until {_time(r.old_secret_expire_time)}")

    return lambda **kw: (stub.RotateApiKey(request, **kw), rotated)


def _parse_time(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _time(ts: Any) -> str:
    if not ts.seconds and not ts.nanos:
        return "-"
    return ts.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _enum(value: int, names: dict[str, int]) -> str:
    return next((name for name, number in names.items() if number == value), "-")


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], next_token: str = "") -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    if next_token:
        print(f"\nmore: --page-token {next_token}")


def _tenant_table(tenants: Sequence[Any], next_token: str = "") -> None:
    rows = [
        (t.id, t.slug, t.name, t.plan, _enum(t.status, _TENANT_STATUS), _time(t.trial_end_time), _time(t.create_time))
        for t in tenants
    ]
    _table(("ID", "SLUG", "NAME", "PLAN", "STATUS", "TRIAL ENDS", "CREATED"), rows, next_token)


def _key_table(keys: Sequence[Any], next_token: str = "") -> None:
    rows = [
        (k.id, k.name, f"{k.key_prefix}…{k.key_hint}", _enum(k.environment, _ENVS), _enum(k.scope, _SCOPES),
         _enum(k.status, _KEY_STATUS), k.end_user_id or "-", _time(k.last_used_time))
        for k in keys
    ]  # fmt: skip
    _table(("ID", "NAME", "KEY", "ENV", "SCOPE", "STATUS", "END USER", "LAST USED"), rows, next_token)
