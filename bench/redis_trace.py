"""Which Redis commands one Relay request sends, from ``MONITOR``.

MONITOR tells commands a client sent (one network write each, or part of a
pipeline) from commands a Lua script ran inside Redis, which ``INFO
commandstats`` lumps together.  It slows Redis down, so it runs on a few
sequential requests of its own, never during a timed run.  Background loops
of the workers (health, jobs, noisy-neighbour windows) may add a command or
two to the window; over tens of requests that is noise.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import redis

from bench.loadgen import RequestSpec, drive


def trace(redis_url: str, spec: RequestSpec, *, requests: int = 30) -> dict[str, Any]:
    client = redis.Redis.from_url(redis_url, socket_timeout=0.3)
    client_cmds: Counter[str] = Counter()
    lua_cmds: Counter[str] = Counter()
    stop = threading.Event()
    ready = threading.Event()
    failure: list[BaseException] = []

    def listen() -> None:
        try:
            with client.monitor() as monitor:
                ready.set()
                while not stop.is_set():
                    try:
                        entry = monitor.next_command()
                    except (redis.TimeoutError, TimeoutError):
                        continue
                    command = str(entry.get("command", "")).split(" ", 1)[0].strip('"').lower()
                    if not command or command == "monitor":
                        continue
                    (lua_cmds if entry.get("client_type") == "lua" else client_cmds)[command] += 1
        except BaseException as exc:  # noqa: BLE001 - reported to the caller
            failure.append(exc)
            ready.set()

    thread = threading.Thread(target=listen, name="redis-monitor", daemon=True)
    thread.start()
    ready.wait(10)
    try:
        result = drive(spec, concurrency=1, requests=requests, duration_s=30)
    finally:
        stop.set()
        thread.join(5)
        client.close()
    if failure:
        return {"error": repr(failure[0])}
    n = max(1, result.ok + result.errors)
    return {
        "requests": n,
        "client_commands_per_request": round(sum(client_cmds.values()) / n, 2),
        "lua_commands_per_request": round(sum(lua_cmds.values()) / n, 2),
        "client_commands": {k: round(v / n, 2) for k, v in client_cmds.most_common()},
        "lua_commands": {k: round(v / n, 2) for k, v in lua_cmds.most_common()},
    }
