"""The SDK facade is typed: strict mypy passes on relay_sdk (its config is in sdk_python/pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SDK = Path(__file__).resolve().parents[2] / "sdk_python"


def test_sdk_facade_is_mypy_strict_clean() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "relay_sdk"], cwd=SDK, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
