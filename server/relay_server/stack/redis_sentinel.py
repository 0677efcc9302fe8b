"""A local Redis master, its replicas and three Redis Sentinels, for the Sentinel tests.

Data nodes are ordinary ``redis-server`` processes (``stack/redis.py`` finds the binary),
the replicas started with ``--replicaof``; each sentinel is the same binary with
``--sentinel`` and a config file of its own (Sentinel rewrites it as the topology
changes).  A short ``down-after-milliseconds`` and ``failover-timeout`` let a dead master's
replica take over within a few seconds, which is what the failover tests exercise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import redis as redis_client

from relay_server.stack import processes
from relay_server.stack.redis import RedisHandle, find_redis_server, redis_command, start_redis_argv

MASTER_NAME = "relay"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000


def sentinel_url(sentinel_ports: Sequence[int], master: str = MASTER_NAME, *, password: str | None = None) -> str:
    """The ``redis+sentinel://`` URL Relay reads (docs/operations-cluster.md)."""
    auth = f":{quote(password, safe='')}@" if password else ""
    return f"redis+sentinel://{auth}" + ",".join(f"127.0.0.1:{p}" for p in sentinel_ports) + f"/{master}"


@dataclass
class RedisSentinelHandle:
    """Data nodes as started (``data[0]`` the first master; roles change on failover) and sentinels."""

    data: list[RedisHandle]
    sentinels: list[RedisHandle]
    master_name: str = MASTER_NAME
    password: str | None = field(default=None, repr=False)
    _stopped: bool = field(default=False, repr=False)

    @property
    def url(self) -> str:
        return sentinel_url([s.port for s in self.sentinels], self.master_name, password=self.password)

    def node(self, port: int) -> RedisHandle:
        return next(n for n in self.data if n.port == port)

    def client(self, port: int) -> redis_client.Redis:
        return redis_client.Redis(port=port, password=self.password, socket_connect_timeout=0.5, socket_timeout=1.0)

    def master_port(self) -> int | None:
        """The master's port as the first answering sentinel names it (None: none answers)."""
        for s in self.sentinels:
            try:
                with redis_client.Redis(port=s.port, socket_connect_timeout=0.5, socket_timeout=1.0) as c:
                    reply = c.execute_command("SENTINEL", "get-master-addr-by-name", self.master_name)
            except redis_client.RedisError:
                continue
            if reply:
                return int(reply[1])
        return None

    def failover(self) -> None:
        """``SENTINEL FAILOVER``: promote a replica now, without waiting for the master to fail."""
        with redis_client.Redis(port=self.sentinels[0].port, socket_timeout=2.0) as c:
            c.execute_command("SENTINEL", "FAILOVER", self.master_name)

    def ready(self) -> bool:
        """A master with every replica in sync, and every sentinel seeing the master, its replicas and its peers."""
        master = self.master_port()
        if master is None:
            return False
        try:
            with self.client(master) as c:
                role = c.execute_command("ROLE")
                if role[0] != b"master" or len(role[2]) != len(self.data) - 1:
                    return False
            for s in self.sentinels:
                with redis_client.Redis(port=s.port, socket_connect_timeout=0.5, socket_timeout=1.0) as c:
                    state = c.sentinel_master(self.master_name)  # redis-py parses it into a dict
                    if int(state["port"]) != master or state["is_sdown"] or state["is_odown"]:
                        return False
                    if int(state["num-slaves"]) != len(self.data) - 1:
                        return False
                    if int(state["num-other-sentinels"]) != len(self.sentinels) - 1:
                        return False
        except redis_client.RedisError:
            return False
        return True

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        for n in [*self.sentinels, *self.data]:
            n.stop()


def sentinel_config(data_dir: Path, port: int, master_port: int, *, quorum: int, password: str | None) -> Path:
    lines = [
        f"port {port}",
        "bind 127.0.0.1",
        f"dir {data_dir}",
        f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} {quorum}",
        f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}",
        f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}",
        f"sentinel parallel-syncs {MASTER_NAME} 1",
    ]
    if password:
        lines.append(f"sentinel auth-pass {MASTER_NAME} {password}")
    path = data_dir / "sentinel.conf"
    path.write_text("\n".join(lines) + "\n")  # Sentinel rewrites it: a fresh one per start
    return path


def start_redis_sentinel(
    root: Path,
    data_ports: Sequence[int],
    sentinel_ports: Sequence[int],
    *,
    password: str | None = None,
    timeout: float = 30.0,
) -> RedisSentinelHandle:
    """``data_ports[0]`` the master, the rest its replicas, one sentinel per ``sentinel_ports`` (quorum: a majority)."""
    handle = RedisSentinelHandle([], [], password=password)
    auth = ["--requirepass", password, "--masterauth", password] if password else []
    try:
        master = data_ports[0]
        for port in data_ports:
            data_dir = root / f"redis-{port}"
            data_dir.mkdir(parents=True, exist_ok=True)
            follow = ["--replicaof", "127.0.0.1", str(master)] if port != master else []
            argv = [*redis_command(data_dir, port), *auth, *follow]
            handle.data.append(start_redis_argv(argv, data_dir, port, password=password))
        for port in sentinel_ports:
            data_dir = root / f"sentinel-{port}"
            data_dir.mkdir(parents=True, exist_ok=True)
            config = sentinel_config(data_dir, port, master, quorum=len(sentinel_ports) // 2 + 1, password=password)
            argv = [str(find_redis_server()), str(config), "--sentinel", "--logfile", ""]
            handle.sentinels.append(start_redis_argv(argv, data_dir, port))
        processes.wait_until(handle.ready, timeout=timeout, what="redis sentinel topology")
    except BaseException:
        handle.stop()
        raise
    return handle
