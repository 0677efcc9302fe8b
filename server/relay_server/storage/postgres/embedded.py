"""An embedded Postgres 16 (+ pgvector) for development and tests.

The server binaries come from the PyPI ``pgserver`` package.  We use its
binaries and its small OS helpers, but not its ``PostgresServer`` class: that
class keeps process-wide state (an ``atexit`` hook, a registry of instances, a
pid list on disk), listens only on a Unix socket with ``trust`` auth, and can
only be stopped by the process that started it.  Relay needs a server that one
command starts (``make up``), another stops (``make down``), and that checks
passwords so the ``relay_app`` role is exercised exactly as in production.

Layout under ``data_dir``::

    data_dir/pgdata/               PGDATA (owned by the server's OS user)
    data_dir/superuser.password    the ``postgres`` password (0600)

Postgres refuses to run as root.  When we are root, the server runs as the OS
user ``pgserver`` (created on first use, as the ``pgserver`` package does), and
the directories on the way to ``data_dir`` AND to the pgserver binaries get the
traverse bit for others (only that bit: nothing becomes listable).  Both
matter when the checkout sits in a private 0700 directory (``mktemp -d``,
``/root/...``): ``make up`` keeps its data inside the checkout, the test
fixtures keep theirs in /tmp, and either way the server's user must reach
``.venv/.../pgserver/pginstall``.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import socket
import stat
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

SUPERUSER = "postgres"
_OS_USER_WHEN_ROOT = "pgserver"
_START_TIMEOUT_S = 60


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be initialised, started or stopped."""


@dataclass(frozen=True)
class EmbeddedPostgres:
    """A running embedded server.  ``dsn`` is a superuser DSN for psycopg 3."""

    data_dir: Path
    port: int
    password: str = field(repr=False)
    host: str = "127.0.0.1"

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def dsn(self) -> str:
        return self.dsn_for("postgres")

    def dsn_for(self, database: str, *, user: str = SUPERUSER, password: str | None = None) -> str:
        pw = self.password if password is None else password
        auth = f"{quote(user, safe='')}:{quote(pw, safe='')}"
        return f"postgresql://{auth}@{self.host}:{self.port}/{quote(database, safe='')}"

    def is_running(self) -> bool:
        return _running_port(self.pgdata) is not None

    def stop(self) -> bool:
        """Stop the server; False if it was not running."""
        return stop_embedded_postgres(self.data_dir)


def start_embedded_postgres(
    data_dir: Path,
    *,
    port: int | None = None,
    durable: bool = True,
    settings: Mapping[str, str] | None = None,
) -> EmbeddedPostgres:
    """Initialise (first time) and start a server in ``data_dir``; return its handle.

    If a server is already running on this data directory, return a handle to it
    (so ``make up`` twice is harmless).  ``port=None`` picks a free port on
    127.0.0.1.  ``durable=False`` turns off fsync and friends: for tests and
    throw-away data only (a crash of the machine can corrupt the cluster).
    """
    data_dir = Path(data_dir).expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    os_user = _os_user()
    password = _superuser_password(data_dir)
    pgdata = data_dir / "pgdata"

    running = _running_port(pgdata)
    if running is not None:
        return EmbeddedPostgres(data_dir=data_dir, port=running, password=password)

    if os_user is not None:
        _allow_traversal(data_dir)
        _allow_traversal(Path(_bin("initdb")).parent)
    if not (pgdata / "PG_VERSION").exists():
        _initdb(pgdata, password, os_user)

    chosen = port if port is not None else _free_port()
    options = {
        "listen_addresses": "127.0.0.1",
        "port": str(chosen),
        # No Unix socket: its path length is limited, and TCP + password is what
        # every other client of this server uses anyway.
        "unix_socket_directories": "",
    }
    if not durable:
        options.update(fsync="off", synchronous_commit="off", full_page_writes="off")
    options.update(settings or {})
    args = ["start", "-w", "-t", str(_START_TIMEOUT_S), "-l", str(pgdata / "server.log")]
    args += ["-o", " ".join(f"-c {k}={_quote_option(v)}" for k, v in options.items())]
    _pg_ctl(pgdata, args, os_user)
    return EmbeddedPostgres(data_dir=data_dir, port=chosen, password=password)


def attach_embedded_postgres(data_dir: Path) -> EmbeddedPostgres | None:
    """A handle to the server already running in ``data_dir``, or None."""
    data_dir = Path(data_dir).expanduser().resolve()
    pw_file = data_dir / "superuser.password"
    port = _running_port(data_dir / "pgdata")
    if port is None or not pw_file.exists():
        return None
    return EmbeddedPostgres(data_dir=data_dir, port=port, password=pw_file.read_text().strip())


def stop_embedded_postgres(data_dir: Path) -> bool:
    """Stop the server in ``data_dir`` (fast shutdown).  False if it was not running.

    Works from any process, not only the one that started the server.
    """
    pgdata = Path(data_dir).expanduser().resolve() / "pgdata"
    if _running_port(pgdata) is None:
        return False
    _pg_ctl(pgdata, ["stop", "-w", "-m", "fast", "-t", str(_START_TIMEOUT_S)], _os_user())
    return True


# --- helpers ---------------------------------------------------------------


def _bin(name: str) -> str:
    # Located without importing ``pgserver``: its import has side effects
    # (platformdirs lookups, warnings) that we do not need.
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError("the pgserver package is not installed")
    return str(Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin" / name)


def _os_user() -> str | None:
    """None when not root; else the unprivileged OS user the server runs as."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        pwd.getpwnam(_OS_USER_WHEN_ROOT)
    except KeyError:
        subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", _OS_USER_WHEN_ROOT], check=True)
    return _OS_USER_WHEN_ROOT


def _superuser_password(data_dir: Path) -> str:
    pw_file = data_dir / "superuser.password"
    if pw_file.exists():
        return pw_file.read_text().strip()
    password = secrets.token_urlsafe(24)
    fd = os.open(pw_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    return password


def _initdb(pgdata: Path, password: str, os_user: str | None) -> None:
    pgdata.mkdir(mode=0o700, exist_ok=True)
    if any(pgdata.iterdir()):
        raise EmbeddedPostgresError(f"{pgdata} is not empty and holds no PG_VERSION: refusing to initdb over it")
    # initdb reads the password from a file; put it where the server's OS user
    # can read it, and remove it straight after.
    pw_file = pgdata.parent / f".initdb-pw-{secrets.token_hex(4)}"
    fd = os.open(pw_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    try:
        if os_user is not None:
            import pwd

            entry = pwd.getpwnam(os_user)
            os.chown(pgdata, entry.pw_uid, entry.pw_gid)
            os.chown(pw_file, entry.pw_uid, entry.pw_gid)
        _run(
            [
                _bin("initdb"),
                "-D", str(pgdata),
                "-U", SUPERUSER,
                "--pwfile", str(pw_file),
                "--auth-host=scram-sha-256",
                "--auth-local=scram-sha-256",
                "-E", "UTF8",
                "--no-locale",
                "--no-sync",
            ],
            os_user,
            cwd=pgdata,
        )
    finally:
        pw_file.unlink(missing_ok=True)


def _pg_ctl(pgdata: Path, args: list[str], os_user: str | None) -> None:
    _run([_bin("pg_ctl"), "-D", str(pgdata), *args], os_user, cwd=pgdata)


def _run(cmd: list[str], os_user: str | None, *, cwd: Path) -> None:
    # Output goes to an anonymous file, not a pipe: a pipe inherited by the
    # daemonised postmaster would keep ``subprocess.run`` waiting forever.
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            # Drop uid AND groups: with root's gid kept, a 0701 root-owned
            # directory would deny the server its group bits.
            user=os_user,
            group=os_user,
            extra_groups=[] if os_user else None,
            check=False,
        )
        if proc.returncode != 0:
            out.seek(0)
            log_file = cwd / "server.log"
            log = log_file.read_text(errors="replace")[-4000:] if log_file.exists() else ""
            raise EmbeddedPostgresError(f"{Path(cmd[0]).name} failed ({proc.returncode}): {out.read()[-4000:]}\n{log}")


def _running_port(pgdata: Path) -> int | None:
    """The port of the live postmaster for ``pgdata``, from ``postmaster.pid``."""
    pid_file = pgdata / "postmaster.pid"
    try:
        lines = pid_file.read_text().splitlines()
    except (FileNotFoundError, PermissionError):
        return None
    if len(lines) < 4 or not lines[0].strip().isdigit():
        return None
    try:
        os.kill(int(lines[0]), 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, owned by another user
    return int(lines[3]) if lines[3].strip().isdigit() else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _allow_traversal(path: Path) -> None:
    """Give 'others' the execute (traverse) bit on ``path`` and its ancestors.

    Only the x bit: the server's OS user must reach PGDATA, not list our files.
    """
    for p in (path, *path.parents):
        mode = p.stat().st_mode
        if not mode & stat.S_IXOTH:
            p.chmod(mode | stat.S_IXOTH)


def _quote_option(value: str) -> str:
    # pg_ctl hands -o to a shell; single-quote values (empty string included).
    return "'" + value.replace("'", "'\\''") + "'"
