"""Detached processes with pid files: start, find, wait for, stop.

``make up`` starts long-lived processes (Envoy, the gRPC server, Redis) that
must outlive the shell that ran it.  Measured: a plain background Envoy is
killed with its launching shell, even under ``setsid``; a double fork is what
survives.  So ``spawn_detached`` runs a short-lived launcher interpreter in a
new session, the launcher starts the real process and exits at once, and the
process ends up re-parented away from the caller.

A pid file holds ``"<pid> <start time>"``.  The start time (from
``/proc/<pid>/stat``) guards against pid reuse: after a reboot the same number
may belong to an unrelated process, which ``stop`` must never signal.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from relay_server.pids import pid_exists

# Runs in the intermediate interpreter.  It gets its spec on stdin (never in
# argv, where secrets would show in `ps`), and inherits the environment meant
# for the final process.
_LAUNCHER = """
import json, subprocess, sys
spec = json.load(sys.stdin)
with open(spec["log"], "ab", buffering=0) as log:
    try:
        proc = subprocess.Popen(spec["argv"], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    except OSError as exc:
        sys.stdout.write("error " + str(exc))
        sys.exit(1)
sys.stdout.write(str(proc.pid))
"""


class ProcessError(RuntimeError):
    """A managed process failed to start or exited early."""


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm (field 2) may hold spaces and parentheses; fields resume after the last ')'.
    rest = stat[stat.rindex(")") + 2 :].split()
    if rest[0] in ("Z", "X"):  # a zombie or dead process is not running
        return None
    return rest[19]  # field 22, starttime


def pid_alive(pid: int) -> bool:
    """True when ``pid`` exists and is not a zombie."""
    if pid <= 0:
        return False
    if Path("/proc").is_dir():
        return _start_time(pid) is not None
    return pid_exists(pid)


def write_pidfile(pid_path: Path, pid: int) -> None:
    pid_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = pid_path.with_suffix(".tmp")
    tmp.write_text(f"{pid} {_start_time(pid) or '-'}\n")
    tmp.replace(pid_path)  # atomic: a reader never sees half a pid file


def read_pid(pid_path: Path) -> int | None:
    """The pid recorded in ``pid_path`` if that very process still runs."""
    try:
        fields = pid_path.read_text().split()
        pid = int(fields[0])
    except (OSError, ValueError, IndexError):
        return None
    if not pid_alive(pid):
        return None
    recorded = fields[1] if len(fields) > 1 else "-"
    if recorded != "-" and _start_time(pid) not in (None, recorded):
        return None  # the pid was reused by another process
    return pid


def child_env(extra: Mapping[str, str], *, pythonpath: Sequence[Path] = ()) -> dict[str, str]:
    """The environment for a child process: this one's plus ``extra``.

    ``pythonpath`` entries go in front of any inherited PYTHONPATH.  This only
    passes the environment through (PATH, HOME, locale, ...); Relay's own
    settings are read by ``relay_server.settings`` alone.
    """
    env = {**os.environ, **extra}
    if pythonpath:
        inherited = [env["PYTHONPATH"]] if env.get("PYTHONPATH") else []
        env["PYTHONPATH"] = os.pathsep.join([*(str(p) for p in pythonpath), *inherited])
    return env


def spawn_detached(
    argv: Sequence[str],
    *,
    log_path: Path,
    pid_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Start ``argv`` detached from the caller; record its pid; return it.

    stdin is /dev/null; stdout and stderr are appended to ``log_path``.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    launcher = subprocess.run(
        [sys.executable, "-I", "-c", _LAUNCHER],
        input=json.dumps({"argv": list(argv), "log": str(log_path)}),
        capture_output=True,
        text=True,
        env=None if env is None else dict(env),
        cwd=cwd,
        start_new_session=True,
        timeout=30,
        check=False,
    )
    out = launcher.stdout.strip()
    if launcher.returncode != 0 or not out.isdigit():
        raise ProcessError(f"could not start {argv[0]}: {out or launcher.stderr.strip()}")
    pid = int(out)
    write_pidfile(pid_path, pid)
    return pid


def stop(
    pid_path: Path,
    *,
    sig: signal.Signals = signal.SIGTERM,
    timeout: float = 15.0,
    group: bool = False,
) -> bool:
    """Stop the process in ``pid_path`` (``sig``, wait, then SIGKILL).

    With ``group=True`` the whole process group is signalled and waited for:
    a process started by ``spawn_detached`` leads no group of its own but
    shares one with nothing else, so this also reaches the worker processes
    it forked.  Returns True if a running process was stopped, False if none
    was running.  The pid file is removed either way.
    """
    pid = read_pid(pid_path)
    try:
        if pid is None:
            return False
        pgid = _own_group(pid) if group else None
        try:
            _signal(pid, pgid, sig)
        except ProcessLookupError:
            return False
        if not _wait_gone(pid, pgid, timeout):
            try:
                _signal(pid, pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _wait_gone(pid, pgid, 5.0)
        return True
    finally:
        pid_path.unlink(missing_ok=True)


def _own_group(pid: int) -> int | None:
    """``pid``'s process group, unless it is the caller's own."""
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return None
    return None if pgid == os.getpgrp() else pgid


def _signal(pid: int, pgid: int | None, sig: signal.Signals) -> None:
    if pgid is None:
        os.kill(pid, sig)
    else:
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # Zombies still count for killpg; look for a live member.
    return any(_pgid_of(p) == pgid and pid_alive(p) for p in _all_pids())


def _all_pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def _pgid_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def _wait_gone(pid: int, pgid: int | None, timeout: float) -> bool:
    def gone() -> bool:
        return not pid_alive(pid) and (pgid is None or not _group_alive(pgid))

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gone():
            return True
        time.sleep(0.05)
    return gone()


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(
    check: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    pid: int | None = None,
    log_path: Path | None = None,
) -> None:
    """Poll ``check`` until it is true; fail fast if ``pid`` dies meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if pid is not None and not pid_alive(pid):
            raise ProcessError(f"{what}: the process exited{_log_hint(log_path)}")
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what}: not ready after {timeout:.0f}s{_log_hint(log_path)}")
        time.sleep(0.1)


def wait_for_port(
    host: str,
    port: int,
    timeout: float = 30.0,
    *,
    pid: int | None = None,
    log_path: Path | None = None,
) -> None:
    """Wait until ``host:port`` accepts TCP connections."""
    wait_until(
        lambda: port_open(host, port),
        timeout=timeout,
        what=f"port {host}:{port}",
        pid=pid,
        log_path=log_path,
    )


def _log_hint(log_path: Path | None) -> str:
    if log_path is None or not log_path.exists():
        return ""
    tail = log_path.read_text(errors="replace").splitlines()[-10:]
    return f" (log {log_path}):\n" + "\n".join(tail)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (for tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
