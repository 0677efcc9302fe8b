"""The multi-node topology on loopback, for the cross-node tests: what `make up-cluster` starts.

A 3-master + 3-replica Redis Cluster, PgBouncer in front of the session's embedded Postgres
(app role in transaction mode, owner in session mode), two gateway nodes (server + Envoy each,
started by ``tests.support.stack.start_node``) sharing one database and one cluster, and a front
Envoy balancing across them with a health check on ``/ready``.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from relay_server.stack import envoy as envoy_stack
from relay_server.stack.front_envoy import healthy_nodes, write_front_config
from relay_server.stack.pgbouncer import PgBouncerHandle, start_pgbouncer
from relay_server.stack.processes import free_port, wait_until
from relay_server.stack.redis_cluster import RedisClusterHandle, free_cluster_ports, start_redis_cluster
from relay_server.storage.postgres.demo import seed_demo
from relay_server.storage.postgres.migrate import APP_ROLE
from tests.support.pg import OWNER_ROLE, PgCluster, TestDatabase
from tests.support.stack import RelayStack, start_node


@dataclass
class RelayCluster:
    base_url: str  # the front Envoy's /v1
    front_port: int
    front_admin_port: int
    nodes: list[RelayStack]
    redis: RedisClusterHandle
    bouncer: PgBouncerHandle
    db: TestDatabase
    admin_token: str
    test_key: str
    workdir: Path
    _front: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def stop(self) -> None:
        if self._front is not None and self._front.poll() is None:
            self._front.terminate()
            try:
                self._front.wait(10)
            except subprocess.TimeoutExpired:
                self._front.kill()
                self._front.wait()
        for node in self.nodes:
            node.stop()
        self.bouncer.stop()
        self.redis.stop()

    def healthy_nodes(self) -> int:
        """How many gateway nodes the front Envoy's health check sees as healthy."""
        return healthy_nodes(self.front_admin_port)


def start_relay_cluster(
    pg: PgCluster, db: TestDatabase, workdir: Path, *, nodes: int = 2, extra_env: dict[str, str] | None = None
) -> RelayCluster:
    workdir.mkdir(parents=True, exist_ok=True)
    redis = start_redis_cluster(workdir / "redis", free_cluster_ports(6), replicas_per_master=1)
    try:
        bouncer = start_pgbouncer(
            workdir / "pgbouncer", free_port(), upstream_host=pg.server.host, upstream_port=pg.server.port,
            users={APP_ROLE: pg.app_password, OWNER_ROLE: pg.owner_password}, pool_size=50,
        )  # fmt: skip
    except BaseException:
        redis.stop()
        raise
    seeded = json.loads(seed_demo(db.owner_dsn))
    admin_token, jwt_secret = secrets.token_urlsafe(24), secrets.token_urlsafe(32)
    cluster = RelayCluster(
        base_url="", front_port=free_port(), front_admin_port=free_port(), nodes=[], redis=redis, bouncer=bouncer,
        db=db, admin_token=admin_token, test_key=seeded["test_key"], workdir=workdir,
    )  # fmt: skip
    try:
        for i in range(nodes):
            node = RelayStack(
                base_url="", grpc_addr="", test_key=seeded["test_key"], admin_token=admin_token, db=db,
                http_port=free_port(), grpc_port=free_port(), admin_port=free_port(), workdir=workdir / f"node{i}",
                redis_url=redis.url, jwt_secret=jwt_secret, dashboard_port=free_port(),
                database_url=bouncer.dsn(db.name, OWNER_ROLE, pg.owner_password),
                app_database_url=bouncer.dsn(db.name, APP_ROLE, pg.app_password),
            )  # fmt: skip
            cluster.nodes.append(node)
            start_node(node, extra_env={"RELAY_DB_TRANSACTION_POOLING": "1", **(extra_env or {})})
        config = write_front_config(
            workdir / "front-envoy.json", listen_port=cluster.front_port, admin_port=cluster.front_admin_port,
            node_ports=[n.http_port for n in cluster.nodes], validate=False,
        )  # fmt: skip
        with (workdir / "front-envoy.log").open("ab") as log:
            cluster._front = subprocess.Popen(envoy_stack.envoy_command(config), stdout=log, stderr=subprocess.STDOUT)
        wait_until(lambda: envoy_stack.envoy_ready(cluster.front_admin_port), timeout=60, what="front envoy",
                   pid=cluster._front.pid, log_path=workdir / "front-envoy.log")  # fmt: skip
        wait_until(lambda: cluster.healthy_nodes() == nodes, timeout=30, what="front envoy health checks")
        cluster.base_url = f"http://127.0.0.1:{cluster.front_port}/v1"
    except BaseException:
        cluster.stop()
        raise
    return cluster
