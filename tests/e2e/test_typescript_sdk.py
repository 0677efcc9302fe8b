"""The TypeScript SDK (sdk_typescript/) against the real Relay: `npm test` runs its node tests.

The node tests read the stack's address and credentials from the environment;
this test checks that they ran (not skipped) and passed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.stack import RelayStack

pytestmark = pytest.mark.e2e

SDK = Path(__file__).resolve().parents[2] / "sdk_typescript"


def _count(output: str, label: str) -> int:
    match = re.search(rf"^# {label} (\d+)$", output, re.MULTILINE)
    assert match, f"no '# {label}' line in node's test report:\n{output}"
    return int(match.group(1))


def test_typescript_sdk_against_the_real_server(relay: RelayStack) -> None:
    if not (SDK / "node_modules").is_dir():
        pytest.skip("sdk_typescript/node_modules is missing: run `make sdk-ts` (make test does)")
    npm = shutil.which("npm")
    assert npm, "npm is not on PATH"
    env = {
        **os.environ,
        "RELAY_GRPC_ADDR": relay.grpc_addr,
        "RELAY_TEST_KEY": relay.test_key,
        "RELAY_ADMIN_TOKEN": relay.admin_token,
        "NO_COLOR": "1",
    }
    result = subprocess.run([npm, "test"], cwd=SDK, env=env, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"npm test failed:\n{output}"
    assert _count(output, "fail") == 0, output
    # A skipped suite reports "ok N - <name> # SKIP <reason>", and its tests are not counted as skipped.
    assert re.search(r"^ok \d+ - RelayClient against a real Relay$", output, re.MULTILINE), (
        f"the real-server suite did not run and pass:\n{output}"
    )
    assert _count(output, "skipped") == 0, output
