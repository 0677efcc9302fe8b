"""``relay apply -f relay.yaml`` and ``relay diff -f relay.yaml``: declarative configuration.

Both read the file, then the server's state through the admin API
(``RELAY_GRPC_ADDR``, ``RELAY_ADMIN_TOKEN``, like ``relay tenants``).
``diff`` prints what ``apply`` would change and exits 1 when anything
differs, 0 when nothing does; ``apply`` makes the changes and prints them (a
second run changes nothing).  Errors exit 2.  Secrets come from ``${ENV}``
references and are never printed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from relay_server.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    for command, text in (("apply", "make the server match a relay.yaml"), ("diff", "show what `relay apply` would change")):
        p = sub.add_parser(command, help=text)
        p.add_argument("-f", "--file", required=True, type=Path, help="the relay.yaml")
        p.add_argument("--addr", help="gRPC address (default RELAY_GRPC_ADDR, else the server's)")
        p.add_argument("--token", help="admin token (default RELAY_ADMIN_TOKEN)")
        p.add_argument("--wait-timeout", type=float, default=60.0, help="seconds a new tenant's provisioning may take")


def run(args: argparse.Namespace, settings: Settings) -> int:
    import grpc  # noqa: PLC0415  (keep `relay --help` fast)

    from relay_server.declarative import plan as planner  # noqa: PLC0415
    from relay_server.declarative.spec import SpecError, load  # noqa: PLC0415

    token = args.token or settings.admin_token
    if not token:
        print("error: no admin token (set RELAY_ADMIN_TOKEN or pass --token)", file=sys.stderr)
        return 2
    try:
        desired = load(args.file)
    except (SpecError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    addr = args.addr or settings.grpc_addr or settings.grpc_address
    with grpc.insecure_channel(addr) as channel:
        admin = planner.Admin(channel, token)
        try:
            changes = planner.plan(admin, desired, wait_timeout=args.wait_timeout)
            for change in changes:
                print(change.render(), flush=True)
                if args.command == "apply":
                    change.run()
        except grpc.RpcError as exc:
            print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 2
        except (ValueError, TimeoutError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    if args.command == "diff":
        return 1 if changes else 0
    print(f"{len(changes)} change(s) applied" if changes else "no changes")
    return 0
