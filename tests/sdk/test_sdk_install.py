"""The SDK installs and imports on its own: relay-proto + relay-sdk, no server package."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

_CHECK = """
import sys
target = sys.argv[1]
import relay_proto, relay_sdk
from relay_proto.relay.v1 import chat_pb2
assert relay_proto.__file__.startswith(target), relay_proto.__file__
assert relay_sdk.__file__.startswith(target), relay_sdk.__file__
assert "relay_server" not in sys.modules, "the SDK imported the server"
assert relay_sdk.ChatCompletionRequest is chat_pb2.ChatCompletionRequest
relay_sdk.Relay("127.0.0.1:1", api_key="rly_test_sk_x").close()
"""


@pytest.mark.timeout(600)  # two local builds with pip
def test_the_sdk_installs_without_the_server(tmp_path: Path) -> None:
    target = tmp_path / "site"
    # Built from copies: setuptools writes build/ and *.egg-info next to the sources it builds.
    skip = shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".mypy_cache")
    for project in ("proto_python", "sdk_python"):
        shutil.copytree(REPO / project, tmp_path / project, ignore=skip)
    # --no-deps/--no-index/--no-build-isolation: no network; grpcio and protobuf come from this venv.
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--no-build-isolation",
         "--no-cache-dir", "--target", str(target), str(tmp_path / "proto_python"), str(tmp_path / "sdk_python")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr
    # The stubs are typed for whoever installs them (PEP 561).
    assert (target / "relay_proto" / "py.typed").is_file()
    assert (target / "relay_proto" / "relay" / "v1" / "chat_pb2.pyi").is_file()
    assert not (target / "relay_sdk" / "_proto").exists()
    check = subprocess.run(
        [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(target)!r})\n{_CHECK}", str(target)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr
