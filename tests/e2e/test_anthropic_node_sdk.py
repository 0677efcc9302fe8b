"""The official ``@anthropic-ai/sdk`` (npm) against Relay's Anthropic door: create, stream with
``finalMessage()``, tools with a tool_result round trip, thinking, and the SDK's error classes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.stack import RelayStack

pytestmark = pytest.mark.e2e

NODE_DIR = Path(__file__).parent / "node"


def test_the_node_sdk_works_by_changing_base_url(relay: RelayStack) -> None:
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules" / "@anthropic-ai" / "sdk").is_dir():
        pytest.skip("node or tests/e2e/node/node_modules missing: run `make node-clients` (make test does)")
    env = {**os.environ, "RELAY_URL": relay.base_url.removesuffix("/v1"), "RELAY_KEY": relay.test_key}
    done = subprocess.run([node, "anthropic_sdk.mjs"], cwd=NODE_DIR, env=env, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["create"]["type"] == "message" and report["create"]["block"] == "text" and report["create"]["text"]
    assert report["create"]["output"] > 0
    assert report["stream"]["same"] and report["stream"]["stop"] in ("end_turn", "max_tokens")
    assert report["tools"] == {"stop": "tool_use", "name": "get_weather", "after": "text"}
    assert report["thinking"] == ["thinking", "text"]
    assert report["notFound"] == {"cls": True, "status": 404, "type": "not_found_error"}
    assert report["auth"] == {"cls": True, "status": 401}
