"""PgBouncer in front of Postgres, for the multi-node topology and its tests.

Debian's ``pgbouncer`` (``make pgbouncer`` installs it).  The pool mode is chosen per role:

* ``relay_app`` — the gateway's tenant-scoped queries — in **transaction** mode: a server
  connection is shared between clients transaction by transaction.  That is safe because
  ``tenant_tx`` sets ``app.tenant_id`` with ``set_config(…, true)`` (transaction-local) and
  the app pool runs with ``prepare_threshold=None`` (``RELAY_DB_TRANSACTION_POOLING``): no
  session state and no server-side prepared statement outlives a transaction.
* the owner role — migrations, workers, job queue, session advisory locks — in **session**
  mode: those need their server connection for as long as they hold it.

Every database name is forwarded (``*``) to the one upstream server.  Passwords are in an
``auth_file`` readable by PgBouncer's user only; PgBouncer authenticates clients with
SCRAM and logs into Postgres with the same secret.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from relay_server.stack import processes

_RUN_DIR_PREFIX = "relay-pgbouncer-"
_OS_USER_WHEN_ROOT = "pgserver"  # the embedded Postgres's unprivileged user (PgBouncer refuses root too)


def find_pgbouncer() -> Path:
    for candidate in (shutil.which("pgbouncer"), "/usr/sbin/pgbouncer"):
        if candidate and Path(candidate).exists():
            return Path(candidate)
    raise FileNotFoundError("pgbouncer not found: install Debian's pgbouncer (`make pgbouncer`)")


def pgbouncer_available() -> bool:
    try:
        find_pgbouncer()
    except FileNotFoundError:
        return False
    return True


@dataclass
class PgBouncerHandle:
    host: str
    port: int
    pid: int
    run_dir: Path  # config, auth file and log
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _pid_path: Path | None = field(default=None, repr=False)

    def dsn(self, database: str, user: str, password: str) -> str:
        return psycopg.conninfo.make_conninfo(host=self.host, port=self.port, dbname=database, user=user, password=password)

    def stop(self, timeout: float = 10.0) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.send_signal(signal.SIGTERM)  # immediate shutdown: clients are cut
                try:
                    self._proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
        elif self._pid_path is not None:
            processes.stop(self._pid_path, timeout=timeout)
        (self.run_dir / "users.txt").unlink(missing_ok=True)  # the secrets go with the process
        if self._proc is not None and self.run_dir.name.startswith(_RUN_DIR_PREFIX):
            shutil.rmtree(self.run_dir, ignore_errors=True)


def _quote(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


def write_config(
    work_dir: Path,
    port: int,
    *,
    upstream_host: str,
    upstream_port: int,
    users: Mapping[str, str],
    transaction_roles: tuple[str, ...] = ("relay_app",),
    pool_size: int = 50,
) -> Path:
    """The ini and its auth file in ``work_dir``; returns the ini's path."""
    work_dir.mkdir(parents=True, exist_ok=True)
    auth = work_dir / "users.txt"
    auth.touch(mode=0o600)
    auth.chmod(0o600)
    auth.write_text("".join(f"{_quote(u)} {_quote(p)}\n" for u, p in users.items()))
    role_modes = "".join(
        f"{u} = pool_mode={'transaction' if u in transaction_roles else 'session'}\n" for u in users
    )
    ini = work_dir / "pgbouncer.ini"
    ini.write_text(
        f"""[databases]
* = host={upstream_host} port={upstream_port}

[users]
{role_modes}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {auth}
pool_mode = session
default_pool_size = {pool_size}
max_client_conn = 2000
server_reset_query = DISCARD ALL
ignore_startup_parameters = extra_float_digits
logfile = {work_dir / "pgbouncer.log"}
pidfile =
log_connections = 0
log_disconnections = 0
"""
    )
    user = _run_as()
    if user is not None:
        pw = pwd.getpwnam(user)
        for path in (work_dir, auth, ini):
            os.chown(path, pw.pw_uid, pw.pw_gid)
    return ini


def _run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(_OS_USER_WHEN_ROOT)
    except KeyError:
        subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", _OS_USER_WHEN_ROOT], check=True)
    return _OS_USER_WHEN_ROOT


def start_pgbouncer(
    work_dir: Path,
    port: int,
    *,
    upstream_host: str,
    upstream_port: int,
    users: Mapping[str, str],
    pool_size: int = 50,
    transaction_roles: tuple[str, ...] = ("relay_app",),
    detach: bool = False,
    pid_path: Path | None = None,
    timeout: float = 15.0,
) -> PgBouncerHandle:
    """Start PgBouncer on 127.0.0.1:``port``; returns once it accepts connections."""
    work_dir.mkdir(parents=True, exist_ok=True)
    user = _run_as()
    # As root, PgBouncer drops to an unprivileged user that cannot enter a root-only (0700)
    # directory such as pytest's: its config, secrets and log then live in a private
    # directory of that user's own.
    run_dir = Path(tempfile.mkdtemp(prefix=_RUN_DIR_PREFIX)) if user else work_dir
    ini = write_config(
        run_dir, port, upstream_host=upstream_host, upstream_port=upstream_port, users=users, pool_size=pool_size,
        transaction_roles=transaction_roles,
    )  # fmt: skip
    argv = [str(find_pgbouncer()), *(["-u", user] if user else []), str(ini)]
    log_path = work_dir / "pgbouncer.out"
    proc: subprocess.Popen[bytes] | None = None
    if detach:
        if pid_path is None:
            raise ValueError("a detached PgBouncer needs a pid_path")
        pid = processes.spawn_detached(argv, log_path=log_path, pid_path=pid_path, cwd=work_dir)
    else:
        with log_path.open("ab") as log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=work_dir)
        pid = proc.pid
    handle = PgBouncerHandle("127.0.0.1", port, pid, run_dir, proc, pid_path)
    try:
        processes.wait_until(
            lambda: processes.port_open("127.0.0.1", port), timeout=timeout, what="pgbouncer", pid=pid,
            log_path=run_dir / "pgbouncer.log",
        )  # fmt: skip
    except BaseException:
        handle.stop()
        raise
    return handle
