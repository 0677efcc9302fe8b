"""The embedded Postgres, started as root from a checkout in a private (0700)
directory: the server runs as an unprivileged OS user that must still reach
the pgserver binaries.  `make up` and the test fixtures share this code path
(``start_embedded_postgres``), so one test covers both."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the server to another OS user")


def test_root_in_a_private_checkout_starts_the_embedded_server(tmp_path: Path) -> None:
    import importlib.util

    spec = importlib.util.find_spec("pgserver")
    assert spec is not None and spec.submodule_search_locations
    private = Path(tempfile.mkdtemp(prefix="relay-private-"))  # mode 0700, as `mktemp -d` makes it
    data = Path(tempfile.mkdtemp(prefix="relay-pgdata-"))
    try:
        assert private.stat().st_mode & 0o777 == 0o700
        site = private / "checkout" / ".venv" / "site-packages"
        site.mkdir(parents=True)
        package = Path(next(iter(spec.submodule_search_locations)))
        for name in ("pgserver", "pgserver.libs"):  # the binaries find their libraries by RPATH ../../../pgserver.libs
            shutil.copytree(package.parent / name, site / name, symlinks=True)
        script = textwrap.dedent(f"""
            import importlib.util, sys
            from pathlib import Path
            from relay_server.storage.postgres.embedded import start_embedded_postgres
            assert importlib.util.find_spec("pgserver").origin.startswith({str(site)!r})
            server = start_embedded_postgres(Path({str(data)!r}) / "pg", durable=False)
            import psycopg
            with psycopg.connect(server.dsn) as conn:
                print(conn.execute("SELECT 40 + 2").fetchone()[0])
            server.stop()
        """)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *sys.path])}
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=180)
        assert out.returncode == 0, out.stdout + out.stderr
        assert out.stdout.strip().splitlines()[-1] == "42"
        assert private.stat().st_mode & 0o777 == 0o701  # only the traverse bit was granted: nothing is listable
    finally:
        shutil.rmtree(private, ignore_errors=True)
        shutil.rmtree(data, ignore_errors=True)
