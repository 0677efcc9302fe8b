"""``relay dashboard …``: run the web console, bootstrap operators, mint reset links.

Passwords are read from stdin (``--password-stdin``) or prompted for, never
taken as an argument (it would sit in the shell history and in ``ps``).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from typing import Any

from relay_server.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    dashboard = sub.add_parser("dashboard", help="the web console").add_subparsers(dest="action", required=True)
    dashboard.add_parser("serve", help="run the console (behind Envoy at /dashboard)")
    p = dashboard.add_parser("create-operator", help="create (or re-password) an operator account")
    p.add_argument("--email", required=True)
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p = dashboard.add_parser("invite-link", help="print a one-time invitation link for a member without an account")
    p.add_argument("--email", required=True)
    p.add_argument("--base-url", default="http://127.0.0.1:8080", help="where browsers reach Envoy")
    p = dashboard.add_parser("reset-link", help="print a one-time password reset link (valid 1 hour)")
    p.add_argument("--email", required=True)
    p.add_argument("--base-url", default="http://127.0.0.1:8080", help="where browsers reach Envoy")


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "serve":
        from relay_server.dashboard.app import main

        main()
        return 0
    return asyncio.run(_account_action(args, settings))


async def _is_member(pool: Any, email: str) -> bool:
    """The platform's own check from the command line (it holds the owner DSN, as every operator CLI does)."""
    from relay_server.storage.postgres.members import memberships_by_email

    async with pool.connection() as conn:
        return bool(await memberships_by_email(conn, email))


async def _account_action(args: argparse.Namespace, settings: Settings) -> int:
    from relay_server.dashboard.accounts import Accounts, open_pool
    from relay_server.dashboard.passwords import check_strength

    pool = await open_pool(settings.database_url)
    try:
        accounts = Accounts(pool)
        if args.action == "create-operator":
            password = sys.stdin.readline().rstrip("\n") if args.password_stdin else getpass.getpass("Password: ")
            if (problem := check_strength(password)) is not None:
                print(f"error: {problem}", file=sys.stderr)
                return 2
            await accounts.set_password(args.email, password, is_operator=True)
            print(f"operator {args.email.lower()} can sign in at /dashboard/signin")
            return 0
        exists = await accounts.account_exists(args.email)
        if args.action == "invite-link":
            if exists:
                print(f"error: {args.email!r} has an account already (use reset-link)", file=sys.stderr)
                return 1
            if not await _is_member(pool, args.email):
                print(f"error: {args.email!r} is not an active member of any tenant", file=sys.stderr)
                return 1
            token = await accounts.issue_token("invitation", args.email)
            print(f"{args.base_url.rstrip('/')}/dashboard/accept?token={token}")
            return 0
        if not exists:
            print(f"error: no dashboard account {args.email!r}", file=sys.stderr)
            return 1
        token = await accounts.issue_token("password_reset", args.email)
        print(f"{args.base_url.rstrip('/')}/dashboard/reset?token={token}")
        return 0
    finally:
        await pool.close()
