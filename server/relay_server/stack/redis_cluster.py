"""A local Redis Cluster for the multi-node topology and its tests.

Nodes are ordinary ``redis-server`` processes (``stack/redis.py`` finds the
binary) started with ``--cluster-enabled yes``; the slots are then assigned by
``redis-cli --cluster create`` (shipped beside the server binary), which also
pairs each master with its replicas.  A short ``cluster-node-timeout`` makes a
failed master's replica take over within a second or two, which is what the
failover tests exercise.
"""

from __future__ import annotations

import random
import socket
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis as redis_client

from relay_server.stack import processes
from relay_server.stack.redis import RedisHandle, find_redis_server, redis_command, start_redis_argv

NODE_TIMEOUT_MS = 1000


def cluster_url(ports: Sequence[int], host: str = "127.0.0.1") -> str:
    """The ``redis+cluster://`` URL Relay reads (any reachable node is a seed)."""
    return "redis+cluster://" + ",".join(f"{host}:{p}" for p in ports)


@dataclass
class RedisClusterHandle:
    """A running cluster: ``masters`` and ``replicas`` as started (roles change on failover)."""

    nodes: list[RedisHandle]
    replicas_per_master: int
    _stopped: bool = field(default=False, repr=False)

    @property
    def ports(self) -> list[int]:
        return [n.port for n in self.nodes]

    @property
    def url(self) -> str:
        return cluster_url(self.ports)

    def node(self, port: int) -> RedisHandle:
        return next(n for n in self.nodes if n.port == port)

    def masters(self) -> dict[int, list[tuple[int, int]]]:
        """Live master port → its slot ranges, as the cluster reports them now."""
        for n in self.nodes:
            try:
                client = redis_client.Redis(port=n.port, socket_connect_timeout=0.5, socket_timeout=1.0)
                try:
                    slots = client.execute_command("CLUSTER SLOTS")
                finally:
                    client.close()
            except redis_client.RedisError:
                continue
            out: dict[int, list[tuple[int, int]]] = {}
            for entry in slots:
                first, last, master = entry[0], entry[1], entry[2]
                out.setdefault(int(master[1]), []).append((int(first), int(last)))
            return out
        raise RuntimeError("no cluster node answers")

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        for n in self.nodes:
            n.stop()


def free_cluster_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` ports that were free a moment ago, each with its cluster-bus port (+10000) free too."""
    ports: list[int] = []
    while len(ports) < n:
        port = random.randint(20000, 45000)  # noqa: S311 (not a secret)
        if port in ports or not all(_bindable(host, p) for p in (port, port + 10000)):
            continue
        ports.append(port)
    return ports


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def cluster_node_command(data_dir: Path, port: int, node_timeout_ms: int = NODE_TIMEOUT_MS) -> list[str]:
    return [
        *redis_command(data_dir, port),
        "--cluster-enabled", "yes",
        "--cluster-config-file", str(data_dir / "nodes.conf"),
        "--cluster-node-timeout", str(node_timeout_ms),
        # A replica whose link to its master was down for a while still takes over: the
        # local cluster must recover from any single failure the tests inject.
        "--cluster-replica-validity-factor", "0",
    ]  # fmt: skip


def redis_cli() -> Path:
    return find_redis_server().with_name("redis-cli")


def start_redis_cluster(
    root: Path,
    ports: Sequence[int],
    *,
    replicas_per_master: int = 0,
    detach: bool = False,
    pid_dir: Path | None = None,
    node_timeout_ms: int = NODE_TIMEOUT_MS,
    timeout: float = 30.0,
) -> RedisClusterHandle:
    """Start one node per port and form a cluster (``len(ports) / (1 + replicas)`` masters)."""
    nodes: list[RedisHandle] = []
    handle = RedisClusterHandle(nodes, replicas_per_master)
    try:
        for port in ports:
            data_dir = root / f"redis-{port}"
            data_dir.mkdir(parents=True, exist_ok=True)
            (data_dir / "nodes.conf").unlink(missing_ok=True)  # a fresh cluster, never a stale identity
            nodes.append(
                start_redis_argv(
                    cluster_node_command(data_dir, port, node_timeout_ms), data_dir, port, detach=detach,
                    pid_path=pid_dir / f"redis-{port}.pid" if pid_dir is not None else None,
                )
            )  # fmt: skip
        create = [
            str(redis_cli()), "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
            "--cluster-replicas", str(replicas_per_master), "--cluster-yes",
        ]  # fmt: skip
        done = subprocess.run(create, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise processes.ProcessError(
                f"redis-cli --cluster create failed: {done.stdout[-2000:]}{done.stderr[-2000:]}"
            )
        processes.wait_until(lambda: cluster_ok(ports, replicas_per_master), timeout=timeout, what="redis cluster")
    except BaseException:
        handle.stop()
        raise
    return handle


def cluster_ok(ports: Sequence[int], replicas_per_master: int = 0) -> bool:
    """Every node says the cluster is ok, all slots are served, and every replica is attached."""
    expected_nodes = len(ports)
    for port in ports:  # a node that fails to answer is simply "not yet"
        client = redis_client.Redis(port=port, socket_connect_timeout=0.5, socket_timeout=1.0)
        try:
            fields = client.execute_command("CLUSTER INFO")  # redis-py parses it into a dict
            if fields.get("cluster_state") != "ok" or fields.get("cluster_slots_ok") != "16384":
                return False
            if int(fields.get("cluster_known_nodes", 0)) != expected_nodes:
                return False
            if replicas_per_master:
                role = client.execute_command("ROLE")
                if role[0] == b"slave" and role[3] != b"connected":
                    return False
        except redis_client.RedisError:
            return False
        finally:
            client.close()
    return True
