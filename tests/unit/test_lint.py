"""Static checks that catch real bugs: undefined names, unused imports/variables, syntax errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_python_sources_pass_pyflakes_rules() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--select", "F,E9", "--exclude", "*_pb2*",
         "--output-format", "concise", "server", "sdk_python", "scripts", "bench", "tests"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
