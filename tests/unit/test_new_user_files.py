"""What a new user touches first: the env file `make up` writes, and the packages' metadata."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from relay_server.stack import read_env_file, write_env_file

REPO = Path(__file__).resolve().parents[2]


def test_sourcing_the_quickstart_file_exports_it_to_programs(tmp_path: Path) -> None:
    path = tmp_path / "quickstart.env"
    values = {"RELAY_BASE_URL": "http://127.0.0.1:8080/v1", "RELAY_TEST_KEY": "rly_test_sk_a'b $c"}
    write_env_file(path, values, header="header line")
    assert read_env_file(path) == values
    # README: `source .relay/quickstart.env`, then a Python program reads os.environ.
    script = f'. "{path}" && {sys.executable} -c "import os; print(os.environ[\'RELAY_BASE_URL\']); print(os.environ[\'RELAY_TEST_KEY\'])"'
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [values["RELAY_BASE_URL"], values["RELAY_TEST_KEY"]]
    assert path.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("package", ["server", "sdk_python", "proto_python"])
def test_license_is_an_spdx_expression(package: str) -> None:
    """The ``{ text = ... }`` table makes every install print a deprecation (removal 2027)."""
    project = tomllib.loads((REPO / package / "pyproject.toml").read_text())
    assert project["project"]["license"] == "Apache-2.0"
    assert any(r.startswith("setuptools>=77") for r in project["build-system"]["requires"])
