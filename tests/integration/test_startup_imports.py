"""A worker that builds and serves without touching archived months never loads
pyarrow or DuckDB (~115 MB of resident memory per worker): they load on the
first read of an archived file or when the archiver has a month to write.
Nor aiohttp (~10 MB), which only the webhook sender (and the optional aiohttp
upstream client) uses: it loads with the first delivery."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from relay_server.stack.redis import RedisHandle
from tests.support.pg import TestDatabase

ROOT = Path(__file__).resolve().parents[2]

_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys
    from pathlib import Path
    import grpc
    from relay_server.app import add_services, build
    from relay_server.settings import Settings
    from tests.support.metering import make_tenant

    async def main() -> None:
        dsn, app_dsn, redis_url, state, archive = sys.argv[1:6]
        settings = Settings(database_url=dsn, app_database_url=app_dsn, redis_url=redis_url, admin_token="x" * 24,
                            state_dir=Path(state), grpc_port=0, background_jobs=False, archive_url=archive)
        app = await build(settings)
        server = grpc.aio.server()
        add_services(server, app)
        report = await app.archive.archiver.run_once()  # nothing is due in a fresh database
        rows = await app.archive.cold.requests(make_tenant(dsn), {}, None, None, None, 50)  # no archived month
        await app.close()
        print(json.dumps({"loaded": sorted(m for m in ("pyarrow", "duckdb", "aiohttp") if m in sys.modules),
                          "archived": report.partitions, "rows": rows}))

    asyncio.run(main())
    """
)


def test_building_and_serving_the_app_leaves_pyarrow_duckdb_and_aiohttp_unloaded(
    pg_db: TestDatabase, redis_server: RedisHandle, tmp_path: Path
) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in ("server", "proto_python", "."))}
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT, pg_db.owner_dsn, pg_db.app_dsn, redis_server.url, str(tmp_path), str(tmp_path / "cold")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"loaded": [], "archived": [], "rows": []}


def test_the_archive_modules_load_pyarrow_only_when_used(tmp_path: Path) -> None:
    """The negative control: the lazy path really does load them once a file is touched."""
    script = textwrap.dedent(
        f"""
        import sys
        from relay_server.storage.archive.files import ArchiveFiles
        files = ArchiveFiles.from_url({str(tmp_path)!r})
        before = "pyarrow" in sys.modules
        files.months()
        print(before, "pyarrow" in sys.modules)
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in ("server", "proto_python", "."))}
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["False", "True"]
