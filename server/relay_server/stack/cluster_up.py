"""``make up-cluster``: the multi-node topology on this machine (docs/operations-cluster.md).

* a Redis Cluster of 3 masters + 3 replicas (``stack/redis_cluster.py``);
* PgBouncer in front of the embedded Postgres (``stack/pgbouncer.py``): the gateway's app role in
  transaction mode, the owner (workers, job queue) in session mode;
* two gateway nodes, each a server and its own Envoy, started by the same code as ``make up``
  (``stack/up.py``) with their own ports and state directory (``.relay/node<i>/``);
* a front Envoy on ``RELAY_HTTP_PORT`` balancing over the nodes, health-checked on ``/ready``.

The quickstart file is written as ``make up`` writes it; ``make down`` stops all of it.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import secrets
import shutil
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

from relay_server.settings import Settings
from relay_server.stack import StackPaths, processes, read_env_file, write_env_file
from relay_server.stack import envoy as stack_envoy
from relay_server.stack import up as single
from relay_server.stack.front_envoy import healthy_nodes, write_front_config
from relay_server.stack.pgbouncer import start_pgbouncer
from relay_server.stack.redis_cluster import cluster_ok, free_cluster_ports, start_redis_cluster

NODES = 2
CLUSTER_STATE = "cluster.json"  # ports of the Redis nodes and PgBouncer, for reuse and `make down`


def node_settings(settings: Settings, i: int) -> Settings:
    """Node ``i``'s ports: after the front's, so the public port stays ``RELAY_HTTP_PORT``."""
    return dataclasses.replace(
        settings,
        http_port=settings.http_port + 1 + i,
        grpc_port=settings.grpc_port + 1 + i,
        envoy_admin_port=settings.envoy_admin_port + 1 + i,
        state_dir=settings.state_dir / f"node{i}",
    )


def up_cluster(settings: Settings, *, echo: single.Echo = print) -> dict[str, str]:
    paths = StackPaths(settings.state_dir.resolve())
    paths.create()
    stack_env = read_env_file(paths.stack_env)
    quick = read_env_file(paths.quickstart_env)
    state = _read_state(paths)

    owner_dsn, app_dsn = single.ensure_postgres(settings, paths, stack_env, echo)
    redis_url = _ensure_redis_cluster(paths, state, echo)
    owner_pooled, app_pooled = _ensure_pgbouncer(paths, state, owner_dsn, app_dsn, echo)
    (paths.root / CLUSTER_STATE).write_text(json.dumps(state))
    master_key = settings.master_key or stack_env.get("RELAY_MASTER_KEY") or base64.b64encode(os.urandom(32)).decode()
    jwt_secret = settings.jwt_secret or stack_env.get("RELAY_JWT_SECRET") or secrets.token_urlsafe(48)
    stack_env.update({"RELAY_MASTER_KEY": master_key, "RELAY_JWT_SECRET": jwt_secret})
    write_env_file(paths.stack_env, stack_env, header=single._STACK_ENV_HEADER)  # noqa: SLF001 (one format)

    admin_token = settings.admin_token or quick.get("RELAY_ADMIN_TOKEN") or secrets.token_urlsafe(32)
    base_env = {
        "DATABASE_URL": owner_pooled, "RELAY_APP_DATABASE_URL": app_pooled, "REDIS_URL": redis_url,
        "RELAY_DB_TRANSACTION_POOLING": "true", "RELAY_ADMIN_TOKEN": admin_token, "RELAY_MASTER_KEY": master_key,
        "RELAY_JWT_SECRET": jwt_secret, "RELAY_ALLOW_PRIVATE_DESTINATIONS": "true", "RELAY_TRUSTED_PROXIES": "127.0.0.1,::1",
    }  # fmt: skip
    test_key = single._seed_demo({**base_env, "DATABASE_URL": owner_dsn}, settings.test_key or quick.get("RELAY_TEST_KEY", ""), paths)  # noqa: SLF001
    quickstart = {
        "RELAY_BASE_URL": f"http://127.0.0.1:{settings.http_port}/v1",
        "RELAY_GRPC_ADDR": f"127.0.0.1:{settings.grpc_port + 1}",  # node 0's gRPC (the front balances REST only)
        "RELAY_TEST_KEY": test_key,
        "RELAY_ADMIN_TOKEN": admin_token,
    }
    write_env_file(paths.quickstart_env, quickstart, header=single._QUICKSTART_HEADER)  # noqa: SLF001

    node_ports = []
    for i in range(NODES):
        ns = node_settings(settings, i)
        npaths = StackPaths(ns.state_dir.resolve())
        npaths.create()
        env = {**base_env, "RELAY_GRPC_HOST": ns.grpc_host, "RELAY_GRPC_PORT": str(ns.grpc_port), "RELAY_STATE_DIR": str(npaths.root)}
        echo(f"node{i}")
        single._ensure_server(ns, npaths, env, echo)  # noqa: SLF001 (the same launcher as `make up`)
        single._ensure_envoy(ns, npaths, single._render_envoy(ns, npaths), echo)  # noqa: SLF001
        node_ports.append(ns.http_port)
    _ensure_front(settings, paths, node_ports, echo)

    models = single.list_models(quickstart["RELAY_BASE_URL"], test_key)
    example = "gpt-4o-mini" if "gpt-4o-mini" in models else (models[0] if models else "MODEL")
    single._print_quickstart(quickstart, paths, example, echo)  # noqa: SLF001
    return quickstart


def down_cluster(settings: Settings, *, echo: single.Echo = print) -> None:
    """Stop what ``up_cluster`` started (nothing when it never ran); data directories stay."""
    paths = StackPaths(settings.state_dir.resolve())
    state = _read_state(paths)
    if not state and not paths.pid("front-envoy").exists():
        return
    echo(f"{'front':9} {'stopped' if processes.stop(paths.pid('front-envoy')) else 'nothing to stop'}")
    for i in range(NODES):
        npaths = StackPaths(node_settings(settings, i).state_dir.resolve())
        stopped = [processes.stop(npaths.pid("envoy")), processes.stop(npaths.pid("server"), timeout=settings.shutdown_grace_s + 5, group=True)]
        echo(f"{'node' + str(i):9} {'stopped' if any(stopped) else 'nothing to stop'}")
    echo(f"{'pgbouncer':9} {'stopped' if processes.stop(paths.pid('pgbouncer')) else 'nothing to stop'}")
    if state.get("pgbouncer_dir"):
        (Path(state["pgbouncer_dir"]) / "users.txt").unlink(missing_ok=True)  # its copy of the passwords
        if state["pgbouncer_dir"].startswith("/tmp/"):
            shutil.rmtree(state["pgbouncer_dir"], ignore_errors=True)
    redis_stopped = [processes.stop(paths.pid(f"redis-{p}")) for p in state.get("redis_ports", [])]
    echo(f"{'redis':9} {'cluster stopped' if any(redis_stopped) else 'nothing to stop'}")
    (paths.root / CLUSTER_STATE).unlink(missing_ok=True)


def _read_state(paths: StackPaths) -> dict:
    try:
        return dict(json.loads((paths.root / CLUSTER_STATE).read_text()))
    except (OSError, ValueError):
        return {}


def _ensure_redis_cluster(paths: StackPaths, state: dict, echo: single.Echo) -> str:
    ports = state.get("redis_ports") or []
    alive = ports and all(processes.read_pid(paths.pid(f"redis-{p}")) for p in ports) and cluster_ok(ports, 1)
    if not alive:
        for p in ports:
            processes.stop(paths.pid(f"redis-{p}"))
        ports = free_cluster_ports(6)
        start_redis_cluster(paths.root / "redis-cluster", ports, replicas_per_master=1, detach=True, pid_dir=paths.pids)
        echo(f"redis     cluster started: 3 masters + 3 replicas on 127.0.0.1:{','.join(map(str, ports))}")
    else:
        echo("redis     cluster running")
    state["redis_ports"] = ports
    return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in ports)


def _ensure_pgbouncer(paths: StackPaths, state: dict, owner_dsn: str, app_dsn: str, echo: single.Echo) -> tuple[str, str]:
    owner, app = conninfo_to_dict(owner_dsn), conninfo_to_dict(app_dsn)
    port = state.get("pgbouncer_port")
    if not port or processes.read_pid(paths.pid("pgbouncer")) is None:
        port = processes.free_port()
        handle = start_pgbouncer(
            paths.root / "pgbouncer", port, upstream_host=str(owner.get("host", "127.0.0.1")),
            upstream_port=int(str(owner.get("port") or 5432)),
            users={str(owner["user"]): str(owner.get("password", "")), str(app["user"]): str(app.get("password", ""))},
            detach=True, pid_path=paths.pid("pgbouncer"),
        )  # fmt: skip
        echo(f"pgbouncer started  pid {handle.pid} on 127.0.0.1:{port}")
        state["pgbouncer_dir"] = str(handle.run_dir)
    else:
        echo("pgbouncer running")
    state["pgbouncer_port"] = port

    def through(params: dict) -> str:
        from psycopg.conninfo import make_conninfo

        return make_conninfo(**{**params, "host": "127.0.0.1", "port": str(port)})

    return through(owner), through(app)


def _ensure_front(settings: Settings, paths: StackPaths, node_ports: list[int], echo: single.Echo) -> None:
    config = paths.root / "front-envoy.json"
    before = config.read_text() if config.exists() else None
    write_front_config(config, listen_port=settings.http_port, admin_port=settings.envoy_admin_port, node_ports=node_ports)
    pid = processes.read_pid(paths.pid("front-envoy"))
    if pid is not None and before != config.read_text():
        processes.stop(paths.pid("front-envoy"))
        pid = None
    if pid is None:
        argv = stack_envoy.envoy_command(config)
        pid = processes.spawn_detached(argv, log_path=paths.log("front-envoy"), pid_path=paths.pid("front-envoy"), cwd=paths.root)
        echo(f"front     started  pid {pid} on http://127.0.0.1:{settings.http_port} (balancing {len(node_ports)} nodes)")
    else:
        echo(f"front     running  pid {pid}")
    processes.wait_until(
        lambda: stack_envoy.envoy_ready(settings.envoy_admin_port) and processes.port_open("127.0.0.1", settings.http_port),
        timeout=30, what="front envoy", pid=pid, log_path=paths.log("front-envoy"),
    )  # fmt: skip
    processes.wait_until(lambda: healthy_nodes(settings.envoy_admin_port) == len(node_ports), timeout=30,
                         what="front envoy health checks on /ready", log_path=paths.log("front-envoy"))  # fmt: skip
