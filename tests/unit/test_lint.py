"""Static checks that `make test` enforces: ruff (ruff.toml), the import contracts of the layers
(`[tool.importlinter]` in server/pyproject.toml, docs/layers.md) and mypy on the server."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SERVER = REPO / "server"


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=540)


@pytest.mark.timeout(600)
def test_python_sources_pass_ruff() -> None:
    result = _run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise",
         "server", "sdk_python", "proto_python", "scripts", "bench", "tests"],
        REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_imports_keep_the_layer_contracts() -> None:
    lint_imports = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint_imports is not None, "import-linter is not installed (requirements-dev.txt)"
    result = _run([lint_imports, "--no-cache"], SERVER)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.timeout(600)  # a cold mypy run takes ~15 s of CPU; on a busy machine far longer
def test_server_passes_mypy() -> None:
    # The config (check_untyped_defs, warn_unused_ignores, …) is [tool.mypy] in server/pyproject.toml;
    # no cache: tests may run at once, and a shared cache file can be left half written.
    result = _run([sys.executable, "-m", "mypy", "--cache-dir", "/dev/null"], SERVER)
    assert result.returncode == 0, result.stdout + result.stderr
