"""The ``relay`` command: run the server and operate the stack."""

from __future__ import annotations

import argparse
import asyncio
import sys

from relay_server.settings import Settings


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from relay_server import logging_setup  # noqa: PLC0415  (keep `relay --help` fast)

    logging_setup.configure(settings.log_level)
    if settings.redis_url:
        from relay_server.storage.redis.urls import check_redis_url  # noqa: PLC0415

        try:
            check_redis_url(settings.redis_url)
        except ValueError as exc:  # a configuration mistake: say which, no traceback (never the URL itself)
            print(f"relay serve: REDIS_URL: {exc}", file=sys.stderr)
            return 2
    if args.workers > 1:
        from relay_server.workers_supervisor import supervise  # noqa: PLC0415

        # Children read the same environment; a --port given here must reach them too.
        return supervise(args.workers, ["--port", str(settings.grpc_port)])
    try:
        import uvloop  # noqa: PLC0415

        uvloop.install()
    except ImportError:
        pass
    from relay_server.app import serve  # noqa: PLC0415

    asyncio.run(serve(settings))
    return 0


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    from relay_server.storage.postgres.migrate import apply_migrations, password_from_dsn  # noqa: PLC0415

    # A deployment (the Kubernetes migrations Job) names relay_app's password in RELAY_APP_DATABASE_URL:
    # the migrations create that role, and this gives it the password the gateway logs in with.
    app_password = password_from_dsn(settings.app_database_url) if settings.app_database_url else None
    applied = apply_migrations(settings.database_url, app_password=app_password)
    print(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else ""))
    return 0


def _seed_demo(args: argparse.Namespace, settings: Settings) -> int:
    from relay_server.storage.postgres.demo import seed_demo  # noqa: PLC0415

    # The key saved by the last `make up` (if still active) is kept instead of minting another.
    print(seed_demo(settings.database_url, settings.test_key or None))
    return 0


def _spool_replay(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path  # noqa: PLC0415

    from relay_server.app.metering import spool_dir  # noqa: PLC0415
    from relay_server.app.silos import open_data_plane  # noqa: PLC0415
    from relay_server.storage.postgres.pool import Database  # noqa: PLC0415
    from relay_server.storage.postgres.request_log import RequestLogStore  # noqa: PLC0415
    from relay_server.storage.postgres.request_log_replay import replay_spool  # noqa: PLC0415
    from relay_server.storage.spool import Spool  # noqa: PLC0415

    directory = Path(args.dir) if args.dir else spool_dir(settings)

    async def run() -> int:
        db = Database.from_settings(settings)
        # The request log is written by the owner role only: the app pool stays closed.
        await db.system.open(wait=True, timeout=30)
        # Rows go to each tenant's database (a tenant moved to a silo meanwhile: its silo).
        plane = await open_data_plane(settings, db)
        try:
            report = await replay_spool(RequestLogStore(plane), Spool(directory))
        finally:
            await plane.close()
            await db.system.close()
        print(f"{directory}: {report.written} row(s) written ({report.sanitised} sanitised), "
              f"{report.still_dead} still refused (kept in the dead-letter file)")  # fmt: skip
        return 1 if report.still_dead else 0

    return asyncio.run(run())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="relay", description="Relay: a multi-tenant LLM API gateway.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the gRPC server")
    serve.add_argument("--workers", type=int, default=None, help="worker processes sharing the port")
    serve.add_argument("--port", type=int, default=None, help="gRPC port (default RELAY_GRPC_PORT or 50051)")
    sub.add_parser("migrate", help="apply database migrations")
    sub.add_parser("seed-demo", help="create the demo tenant and test key (idempotent)")
    spool = sub.add_parser("spool", help="the request-log spool").add_subparsers(dest="spool_command", required=True)
    replay = spool.add_parser("replay", help="write spooled and dead-letter request rows to Postgres")
    replay.add_argument("--dir", default=None, help="spool directory (default: this database's, under RELAY_STATE_DIR)")
    from relay_server import cli_admin  # noqa: PLC0415

    cli_admin.register(sub)  # relay tenants … / relay keys …
    from relay_server import cli_routing  # noqa: PLC0415

    cli_routing.register(sub)  # relay routing …
    from relay_server import cli_platform  # noqa: PLC0415

    cli_platform.register(sub)  # relay providers … / relay plans …
    from relay_server import cli_requests  # noqa: PLC0415

    cli_requests.register(sub)  # relay requests export …
    from relay_server import cli_dashboard  # noqa: PLC0415

    cli_dashboard.register(sub)  # relay dashboard …
    from relay_server import cli_apply  # noqa: PLC0415

    cli_apply.register(sub)  # relay apply -f / relay diff -f
    args = parser.parse_args(argv)

    overrides = {}
    if getattr(args, "port", None):
        overrides["grpc_port"] = args.port
    settings = Settings.from_env(**overrides)
    if args.command == "serve":
        args.workers = args.workers or settings.workers
        return _serve(args, settings)
    if args.command == "migrate":
        return _migrate(args, settings)
    if args.command == "dashboard":
        return cli_dashboard.run(args, settings)
    if args.command == "spool":
        return _spool_replay(args, settings)
    if args.command in ("tenants", "keys"):
        return cli_admin.run(args, settings)
    if args.command in ("apply", "diff"):
        return cli_apply.run(args, settings)
    if args.command == "requests":
        return cli_requests.run(args, settings)
    if args.command == "routing":
        return cli_routing.run(args, settings)
    if args.command in ("providers", "plans"):
        return cli_platform.run(args, settings)
    return _seed_demo(args, settings)


if __name__ == "__main__":
    sys.exit(main())
