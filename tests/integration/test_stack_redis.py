"""The local Redis launcher and the pid-file process helpers it relies on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from relay_server.stack import processes
from relay_server.stack.redis import find_redis_server, ping, start_redis


def test_child_redis_starts_answers_and_stops(tmp_path: Path) -> None:
    port = processes.free_port()
    handle = start_redis(tmp_path / "redis", port)
    try:
        assert handle.url == f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(handle.url)
        client.set("relay:test", "1")
        assert client.get("relay:test") == b"1"
        # Bound to loopback only, append-only log off.
        assert client.config_get("bind")["bind"] == "127.0.0.1"
        assert client.config_get("appendonly")["appendonly"] == "no"
        client.close()
    finally:
        handle.stop()
    assert not ping(handle.url)
    assert not processes.pid_alive(handle.pid)
    handle.stop()  # idempotent


def test_detached_redis_is_stopped_by_its_pid_file(tmp_path: Path) -> None:
    port = processes.free_port()
    pid_path = tmp_path / "pids" / "redis.pid"
    log_path = tmp_path / "logs" / "redis.log"
    handle = start_redis(tmp_path / "redis", port, detach=True, pid_path=pid_path, log_path=log_path)
    try:
        assert processes.read_pid(pid_path) == handle.pid
        # Detached: not our child, and in a session of its own.
        assert os.getsid(handle.pid) != os.getsid(0)
        with pytest.raises(ChildProcessError):
            os.waitpid(handle.pid, os.WNOHANG)
    finally:
        assert processes.stop(pid_path)
    assert not ping(handle.url)
    assert not pid_path.exists()
    assert "Ready to accept connections" in log_path.read_text()
    assert not processes.stop(pid_path)  # nothing left to stop


def test_start_refuses_a_port_in_use(tmp_path: Path) -> None:
    port = processes.free_port()
    first = start_redis(tmp_path / "a", port)
    try:
        with pytest.raises(processes.ProcessError, match="already in use"):
            start_redis(tmp_path / "b", port)
        assert ping(first.url)  # the running one is untouched
    finally:
        first.stop()


def test_detached_start_needs_a_pid_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        start_redis(tmp_path / "redis", processes.free_port(), detach=True)


def test_redis_binary_is_found() -> None:
    binary = find_redis_server()
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=True).stdout
    assert out.startswith("Redis server v=")


# --- processes ------------------------------------------------------------------


def test_pid_file_of_a_dead_or_reused_pid_is_not_trusted(tmp_path: Path) -> None:
    pid_path = tmp_path / "x.pid"
    assert processes.read_pid(pid_path) is None  # missing
    pid_path.write_text("not a pid\n")
    assert processes.read_pid(pid_path) is None  # garbage
    # Our own pid with another start time: a reused pid, never to be signalled.
    pid_path.write_text(f"{os.getpid()} 1\n")
    assert processes.read_pid(pid_path) is None
    assert not processes.stop(pid_path)
    assert not pid_path.exists()
    processes.write_pidfile(pid_path, os.getpid())
    assert processes.read_pid(pid_path) == os.getpid()


def test_stop_escalates_to_sigkill_and_reaches_the_process_group(tmp_path: Path) -> None:
    # A parent that ignores SIGTERM and has a child in its group.
    script = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import signal,time; "
        "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    pid_path, log_path = tmp_path / "p.pid", tmp_path / "p.log"
    pid = processes.spawn_detached([sys.executable, "-c", script], log_path=log_path, pid_path=pid_path)
    processes.wait_until(lambda: log_path.read_text().strip().isdigit(), timeout=10, what="child pid", pid=pid)
    child = int(log_path.read_text().strip())
    assert processes.stop(pid_path, sig=signal.SIGTERM, timeout=0.5, group=True)
    assert not processes.pid_alive(pid)
    assert not processes.pid_alive(child)


def test_spawn_reports_a_missing_binary(tmp_path: Path) -> None:
    with pytest.raises(processes.ProcessError, match="could not start"):
        processes.spawn_detached(["/nonexistent/relay-binary"], log_path=tmp_path / "l.log",
                                 pid_path=tmp_path / "p.pid")  # fmt: skip
    assert not (tmp_path / "p.pid").exists()


def test_wait_for_port_fails_fast_when_the_process_dies(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "print('boom')"], stdout=(tmp_path / "l.log").open("w"))
    proc.wait()
    with pytest.raises(processes.ProcessError, match="exited"):
        processes.wait_for_port("127.0.0.1", processes.free_port(), timeout=30, pid=proc.pid,
                                log_path=tmp_path / "l.log")  # fmt: skip


def test_wait_for_port_times_out(tmp_path: Path) -> None:
    with pytest.raises(TimeoutError):
        processes.wait_for_port("127.0.0.1", processes.free_port(), timeout=0.3)
