"""``make up`` / ``make down`` / status: the whole local stack, idempotently.

``up`` may run any number of times: each piece that already runs (its pid file
names a live process) is reused, and only what is missing is started.  ``down``
stops exactly what ``up`` started, in reverse order, and keeps every data
directory.  External services (``DATABASE_URL`` / ``REDIS_URL`` set) are used
as they are and never stopped.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import httpx
import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from relay_server.settings import Settings
from relay_server.stack import StackPaths, processes, read_env_file, write_env_file
from relay_server.stack import envoy as stack_envoy
from relay_server.stack import redis as stack_redis
from relay_server.stack.dashboard import ensure_dashboard
from relay_server.stack.dashboard import healthy as dashboard_healthy
from relay_server.stack.redact import redact

REPO = Path(__file__).resolve().parents[3]
DESCRIPTOR = REPO / "envoy" / "relay.pb"
# Not 6379, so a system Redis on the default port never clashes with ours.
REDIS_DEFAULT_PORT = 6380
DATABASE_NAME = "relay"
APP_ROLE = "relay_app"

Echo = Callable[[str], None]

_STACK_ENV_HEADER = "Written by `make up`: the databases the local stack started. Do not edit."
_QUICKSTART_HEADER = (
    "Written by `make up`. Load into a shell with:  source .relay/quickstart.env\n"
    "RELAY_TEST_KEY is a test-mode key (deterministic mock answers, no provider is called)."
)


def up(settings: Settings, *, echo: Echo = print) -> dict[str, str]:
    """Start (or reuse) every piece; return the quickstart values."""
    paths = StackPaths(settings.state_dir.resolve())
    paths.create()
    stack_env = read_env_file(paths.stack_env)
    quick = read_env_file(paths.quickstart_env)
    if not DESCRIPTOR.exists():
        raise FileNotFoundError(f"{DESCRIPTOR} is missing: run `make gen` first")

    owner_dsn, app_dsn = ensure_postgres(settings, paths, stack_env, echo)
    redis_url = _ensure_redis(settings, paths, stack_env, echo)
    # Provider credentials are encrypted under this key: generated once, kept (0600) with the stack.
    master_key = settings.master_key or stack_env.get("RELAY_MASTER_KEY") or base64.b64encode(secrets.token_bytes(32)).decode()
    stack_env["RELAY_MASTER_KEY"] = master_key
    # Dashboard sessions call the admin API with JWTs signed by this secret (generated once, kept like the master key).
    jwt_secret = settings.jwt_secret or stack_env.get("RELAY_JWT_SECRET") or secrets.token_urlsafe(48)
    stack_env["RELAY_JWT_SECRET"] = jwt_secret
    write_env_file(paths.stack_env, stack_env, header=_STACK_ENV_HEADER)

    admin_token = settings.admin_token or quick.get("RELAY_ADMIN_TOKEN") or secrets.token_urlsafe(32)
    server_env = {
        "DATABASE_URL": owner_dsn,
        "RELAY_APP_DATABASE_URL": app_dsn,
        "REDIS_URL": redis_url,
        "RELAY_ADMIN_TOKEN": admin_token,
        "RELAY_MASTER_KEY": master_key,
        "RELAY_JWT_SECRET": jwt_secret,
        "RELAY_GRPC_HOST": settings.grpc_host,
        "RELAY_GRPC_PORT": str(settings.grpc_port),
        "RELAY_STATE_DIR": str(paths.root),
        # Local development: webhook receivers run on this machine (localhost), which production refuses.
        "RELAY_ALLOW_PRIVATE_DESTINATIONS": "true",
        # Envoy dials the server from loopback: its x-forwarded-for names REST callers.
        "RELAY_TRUSTED_PROXIES": "127.0.0.1,::1",
    }
    test_key = _seed_demo(server_env, settings.test_key or quick.get("RELAY_TEST_KEY", ""), paths)
    quickstart = {
        "RELAY_BASE_URL": f"http://127.0.0.1:{settings.http_port}/v1",
        "RELAY_GRPC_ADDR": f"{_dial_host(settings.grpc_host)}:{settings.grpc_port}",
        "RELAY_TEST_KEY": test_key,
        "RELAY_ADMIN_TOKEN": admin_token,
    }
    # Saved before anything else can fail: the key is shown only once.
    write_env_file(paths.quickstart_env, quickstart, header=_QUICKSTART_HEADER)

    config = _render_envoy(settings, paths)
    _ensure_server(settings, paths, server_env, echo)
    dashboard_env = {**server_env, "RELAY_GRPC_TARGET": quickstart["RELAY_GRPC_ADDR"],
                     "RELAY_DASHBOARD_PORT": str(settings.dashboard_port)}
    ensure_dashboard(paths, dashboard_env, port=settings.dashboard_port, pythonpath=_pythonpath(), cwd=REPO, echo=echo)
    _ensure_envoy(settings, paths, config, echo)
    processes.wait_until(lambda: dashboard_healthy(settings.http_port), timeout=30, what="dashboard through envoy",
                         pid=None, log_path=paths.log("dashboard"))  # fmt: skip

    models = list_models(quickstart["RELAY_BASE_URL"], test_key)
    example = "gpt-4o-mini" if "gpt-4o-mini" in models else (models[0] if models else "MODEL")
    _print_quickstart(quickstart, paths, example, echo)
    return quickstart


def down(settings: Settings, *, echo: Echo = print) -> None:
    """Stop what ``up`` started (pid files), newest first; keep all data."""
    paths = StackPaths(settings.state_dir.resolve())
    steps: list[tuple[str, Callable[[], bool]]] = [
        ("envoy", lambda: processes.stop(paths.pid("envoy"))),
        ("dashboard", lambda: processes.stop(paths.pid("dashboard"))),
        # The group: --workers N runs a supervisor and N worker processes.
        ("server", lambda: processes.stop(paths.pid("server"), timeout=settings.shutdown_grace_s + 5, group=True)),
        ("redis", lambda: processes.stop(paths.pid("redis"))),
        ("postgres", lambda: stop_postgres(paths)),
    ]
    for name, stop in steps:
        echo(f"{name:9} {'stopped' if stop() else 'nothing to stop'}")


def status(settings: Settings, *, echo: Echo = print) -> bool:
    """Print what runs; True when every piece the stack manages is up."""
    paths = StackPaths(settings.state_dir.resolve())
    stack_env = read_env_file(paths.stack_env)
    all_up = True

    def report(name: str, pid: int | None, where: str) -> None:
        nonlocal all_up
        all_up = all_up and pid is not None
        echo(f"{name:9} {'running  pid ' + str(pid) if pid else 'stopped':18} {where}")

    if _external(settings.database_url, stack_env.get("DATABASE_URL")):
        echo(f"{'postgres':9} {'external':18} {redact(settings.database_url)}")
    else:
        report("postgres", postgres_running(paths), redact(stack_env.get("DATABASE_URL", "")))
    if _external(settings.redis_url, stack_env.get("REDIS_URL")):
        echo(f"{'redis':9} {'external':18} {redact(settings.redis_url)}")
    else:
        report("redis", processes.read_pid(paths.pid("redis")), stack_env.get("REDIS_URL", ""))
    report("server", processes.read_pid(paths.pid("server")), f"grpc {settings.grpc_address}")
    report("dashboard", processes.read_pid(paths.pid("dashboard")), f"http://127.0.0.1:{settings.http_port}/dashboard")
    report("envoy", processes.read_pid(paths.pid("envoy")), f"http://127.0.0.1:{settings.http_port}/v1")
    return all_up


# --- pieces ----------------------------------------------------------------------


def _external(configured: str, ours: str | None) -> bool:
    """A URL set in the environment that is not the one the stack recorded."""
    return bool(configured) and configured != ours


def ensure_postgres(
    settings: Settings, paths: StackPaths, stack_env: dict[str, str], echo: Echo
) -> tuple[str, str]:
    """(owner DSN, app-role DSN), starting the embedded server when needed."""
    from relay_server.storage.postgres.embedded import start_embedded_postgres
    from relay_server.storage.postgres.migrate import (
        apply_migrations,
        password_from_dsn,
    )

    if _external(settings.database_url, stack_env.get("DATABASE_URL")):
        owner_dsn = settings.database_url
        recorded_app = stack_env.get("RELAY_APP_DATABASE_URL", "")
        app_dsn = settings.app_database_url or (recorded_app if _same_database(recorded_app, owner_dsn) else "")
        echo(f"postgres  external {redact(owner_dsn)}")
    else:
        recorded = stack_env.get("DATABASE_URL", "")
        was_running = postgres_running(paths)
        previous_port = urlsplit(recorded).port if recorded else None
        # wal_level=logical: `relay tenants move-to-silo` replicates a tenant's rows (docs/tenancy.md).
        pg = start_embedded_postgres(
            paths.postgres_dir, port=_free_or_none(previous_port), settings={"wal_level": "logical"}
        )
        _create_database(pg.dsn, DATABASE_NAME)
        owner_dsn = pg.dsn_for(DATABASE_NAME)
        # relay_app keeps its password across runs (the port may change).
        recorded_app = stack_env.get("RELAY_APP_DATABASE_URL", "")
        app_password = (password_from_dsn(recorded_app) if recorded_app else None) or secrets.token_urlsafe(24)
        app_dsn = pg.dsn_for(DATABASE_NAME, user=APP_ROLE, password=app_password)
        pid = _postmaster_pid(paths)
        if pid is not None:
            processes.write_pidfile(paths.pid("postgres"), pid)
        echo(f"postgres  {'running ' if was_running else 'started '} pid {pid} on 127.0.0.1:{pg.port}")
        stack_env["DATABASE_URL"] = owner_dsn
    if not app_dsn:
        # An external database without RELAY_APP_DATABASE_URL: give relay_app a
        # password of our own and remember it.
        app_dsn = make_conninfo(owner_dsn, user=APP_ROLE, password=secrets.token_urlsafe(24))
    stack_env["RELAY_APP_DATABASE_URL"] = app_dsn
    applied = apply_migrations(owner_dsn, app_password=password_from_dsn(app_dsn))
    echo(f"migrate   {len(applied)} applied" + (f" ({applied[0]} .. {applied[-1]})" if applied else ""))
    return owner_dsn, app_dsn


def _same_database(a: str, b: str) -> bool:
    """Do two DSNs name the same host, port and database?"""
    if not a or not b:
        return False
    keys = ("host", "port", "dbname")
    da, db = conninfo_to_dict(a), conninfo_to_dict(b)
    return all(da.get(k) == db.get(k) for k in keys)


def _create_database(superuser_dsn: str, name: str) -> None:
    with psycopg.connect(superuser_dsn, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def _postmaster_pid(paths: StackPaths) -> int | None:
    try:
        first = (paths.postgres_dir / "pgdata" / "postmaster.pid").read_text().split("\n", 1)[0]
    except OSError:
        return None
    return int(first) if first.strip().isdigit() else None


def postgres_running(paths: StackPaths) -> int | None:
    """The postmaster's pid if the stack's embedded Postgres runs."""
    pid = _postmaster_pid(paths)
    return pid if pid is not None and processes.pid_alive(pid) else None


def stop_postgres(paths: StackPaths) -> bool:
    """Stop the embedded Postgres if this stack started it (its pid file exists)."""
    if not paths.pid("postgres").exists():
        return False
    from relay_server.storage.postgres.embedded import stop_embedded_postgres

    try:
        return stop_embedded_postgres(paths.postgres_dir)
    finally:
        paths.pid("postgres").unlink(missing_ok=True)


def _free_or_none(port: int | None) -> int | None:
    return port if port and not processes.port_open("127.0.0.1", port) else None


def _ensure_redis(settings: Settings, paths: StackPaths, stack_env: dict[str, str], echo: Echo) -> str:
    if _external(settings.redis_url, stack_env.get("REDIS_URL")):
        stack_redis.wait_for_redis(settings.redis_url, timeout=10)
        echo(f"redis     external {redact(settings.redis_url)}")
        return settings.redis_url
    recorded = stack_env.get("REDIS_URL", "")
    pid = processes.read_pid(paths.pid("redis"))
    if pid is not None and recorded and stack_redis.ping(recorded):
        echo(f"redis     running  pid {pid}")
        return recorded
    previous = urlsplit(recorded).port if recorded else None
    port = next(
        (p for p in (previous, REDIS_DEFAULT_PORT) if p and not processes.port_open("127.0.0.1", p)),
        None,
    ) or processes.free_port()
    handle = stack_redis.start_redis(
        paths.redis_dir, port, detach=True, pid_path=paths.pid("redis"), log_path=paths.log("redis")
    )
    echo(f"redis     started  pid {handle.pid} on 127.0.0.1:{port}")
    stack_env["REDIS_URL"] = handle.url
    return handle.url


def _seed_demo(server_env: dict[str, str], known_key: str, paths: StackPaths) -> str:
    """Run ``relay seed-demo``; return the demo tenant's test key."""
    env = processes.child_env({**server_env, "RELAY_TEST_KEY": known_key}, pythonpath=_pythonpath())
    result = subprocess.run(
        [sys.executable, "-m", "relay_server", "seed-demo"],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise processes.ProcessError(f"seed-demo failed:\n{result.stderr.strip()[-2000:]}")
    for line in reversed(result.stdout.splitlines()):
        try:
            seeded = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(seeded, dict) and seeded.get("test_key"):
            return str(seeded["test_key"])
    if known_key:
        return known_key
    raise processes.ProcessError(
        f"seed-demo printed no test key and none is saved in {paths.quickstart_env}:\n{result.stdout[-500:]}"
    )


def _render_envoy(settings: Settings, paths: StackPaths) -> str:
    config = stack_envoy.render_envoy_config(
        http_port=settings.http_port,
        grpc_host=settings.grpc_host,
        grpc_port=settings.grpc_port,
        admin_port=settings.envoy_admin_port,
        descriptor_path=DESCRIPTOR,
        services=stack_envoy.http_services(DESCRIPTOR),
        max_request_bytes=settings.max_request_bytes,
        access_log_path=paths.access_log,
        dashboard_port=settings.dashboard_port,
        request_timeout=f"{settings.envoy_request_timeout_s}s",
        stream_idle_timeout=f"{settings.envoy_stream_idle_timeout_s}s",
    )
    stack_envoy.validate_envoy_config(config)
    return config


def _ensure_server(settings: Settings, paths: StackPaths, server_env: dict[str, str], echo: Echo) -> None:
    address = f"{_dial_host(settings.grpc_host)}:{settings.grpc_port}"
    argv = [sys.executable, "-m", "relay_server", "serve", "--workers", str(max(1, settings.workers))]
    # A running server started with other settings (ports, URLs, workers) is restarted, like Envoy on a new config.
    launch = hashlib.sha256(json.dumps([argv, sorted(server_env.items())]).encode()).hexdigest()
    launch_file = paths.root / "server.launch"
    pid = processes.read_pid(paths.pid("server"))
    if pid is not None and (not launch_file.exists() or launch_file.read_text() != launch):
        processes.stop(paths.pid("server"), timeout=settings.shutdown_grace_s + 5, group=True)
        echo(f"server    stopped  pid {pid} (settings changed)")
        pid = None
    if pid is None:
        _refuse_busy_port(_dial_host(settings.grpc_host), settings.grpc_port, "RELAY_GRPC_PORT")
        env = processes.child_env(server_env, pythonpath=_pythonpath())
        pid = processes.spawn_detached(argv, log_path=paths.log("server"), pid_path=paths.pid("server"),
                                       env=env, cwd=REPO)  # fmt: skip
        launch_file.write_text(launch)
        echo(f"server    started  pid {pid} ({settings.workers} worker(s)) on {address}")
    else:
        echo(f"server    running  pid {pid} on {address}")
    processes.wait_until(lambda: grpc_serving(address), timeout=90, what="gRPC health SERVING",
                         pid=pid, log_path=paths.log("server"))  # fmt: skip


def _ensure_envoy(settings: Settings, paths: StackPaths, config: str, echo: Echo) -> None:
    pid = processes.read_pid(paths.pid("envoy"))
    changed = not paths.envoy_config.exists() or paths.envoy_config.read_text() != config
    if pid is not None and changed:
        # A running Envoy only reads its config at start: restart to apply.
        processes.stop(paths.pid("envoy"))
        echo(f"envoy     stopped  pid {pid} (config changed)")
        pid = None
    paths.envoy_config.write_text(config)
    if pid is None:
        _refuse_busy_port("127.0.0.1", settings.http_port, "RELAY_HTTP_PORT")
        _refuse_busy_port("127.0.0.1", settings.envoy_admin_port, "RELAY_ENVOY_ADMIN_PORT")
        argv = stack_envoy.envoy_command(paths.envoy_config, concurrency=min(2, os.cpu_count() or 1))
        pid = processes.spawn_detached(argv, log_path=paths.log("envoy"), pid_path=paths.pid("envoy"), cwd=paths.root)
        echo(f"envoy     started  pid {pid} on http://127.0.0.1:{settings.http_port}")
    else:
        echo(f"envoy     running  pid {pid}")
    processes.wait_until(
        lambda: stack_envoy.envoy_ready(settings.envoy_admin_port)
        and processes.port_open("127.0.0.1", settings.http_port),
        timeout=30, what="envoy", pid=pid, log_path=paths.log("envoy"),
    )  # fmt: skip


def grpc_serving(address: str) -> bool:
    """True when the server's overall gRPC health is SERVING."""
    # No proxy: an http_proxy in the environment must not capture loopback calls.
    with grpc.insecure_channel(address, options=[("grpc.enable_http_proxy", 0)]) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def list_models(base_url: str, key: str) -> list[str]:
    """``GET /v1/models`` through Envoy with the test key; the model ids."""
    with httpx.Client(trust_env=False, timeout=15) as client:
        response = client.get(f"{base_url}/models", headers={"authorization": f"Bearer {key}"})
    if response.status_code != 200:
        raise processes.ProcessError(f"GET {base_url}/models answered {response.status_code}: {response.text[:500]}")
    return [str(m["id"]) for m in response.json().get("data", []) if isinstance(m, dict) and "id" in m]


def _refuse_busy_port(host: str, port: int, setting: str) -> None:
    if processes.port_open(host, port):
        raise processes.ProcessError(
            f"port {host}:{port} is taken by a process this stack did not start; free it or set {setting}"
        )


def _dial_host(host: str) -> str:
    """Where a local client reaches a server bound to ``host``."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def _pythonpath() -> list[Path]:
    # Until Relay is installed as a package: the server and the generated stubs.
    return [REPO / "server", REPO / "proto_python"]


def _show(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _print_quickstart(quick: dict[str, str], paths: StackPaths, model: str, echo: Echo) -> None:
    base = quick["RELAY_BASE_URL"]
    env_file = _show(paths.quickstart_env)
    echo(f"""
Relay is up.
  REST (OpenAI-compatible)  {base}
  gRPC                      {quick["RELAY_GRPC_ADDR"]}
  web console               {base.removesuffix("/v1")}/dashboard   (first operator: .venv/bin/relay dashboard create-operator --email you@example.com)
  test key                  {quick["RELAY_TEST_KEY"]}
  settings                  {env_file}   (load: source {env_file})
  logs                      {_show(paths.logs)}/   stop: make down

curl {base}/chat/completions \\
  -H "Authorization: Bearer $RELAY_TEST_KEY" -H "Content-Type: application/json" \\
  -d '{{"model": "{model}", "messages": [{{"role": "user", "content": "Hello"}}]}}'

python - <<'PY'
import os
from openai import OpenAI
client = OpenAI(base_url=os.environ["RELAY_BASE_URL"], api_key=os.environ["RELAY_TEST_KEY"])
reply = client.chat.completions.create(model="{model}", messages=[{{"role": "user", "content": "Hello"}}])
print(reply.choices[0].message.content)
PY""")
