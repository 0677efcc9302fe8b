"""Helpers of the web console's browser tests: Debian's chromium through Playwright,
console-error capture, screenshots at two widths, the CLI bootstrap."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.stack import REPO, RelayStack

WIDTHS = {"laptop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}
PASSWORD = "correct horse battery"
_DOCUMENT_4XX = re.compile(r"Failed to load resource: the server responded with a status of 4\d\d ")


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def artifacts_dir(tmp: Path) -> Path:
    """Screenshots go to RELAY_ARTIFACTS_DIR (CI uploads it) or the test's temp dir; never committed."""
    root = Path(os.environ["RELAY_ARTIFACTS_DIR"]) if os.environ.get("RELAY_ARTIFACTS_DIR") else tmp
    out = root / "dashboard-screenshots"
    out.mkdir(parents=True, exist_ok=True)
    return out


def relay_cli(stack: RelayStack, *args: str, stdin: str = "") -> str:
    result = subprocess.run(
        [sys.executable, "-m", "relay_server", "dashboard", *args],
        env={**os.environ, **stack.server_env()}, input=stdin, capture_output=True, text=True, timeout=60, cwd=REPO,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


class ConsoleWatch:
    """Every console error and uncaught page error of a browser context."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def attach(self, page: Any) -> Any:
        def on_console(msg: Any) -> None:
            if msg.type != "error":
                return
            # Chromium logs a page answered with a 4xx (a refused form, a used link) as an error of
            # that document; the tests assert those statuses themselves.  A 4xx of any other
            # resource (a script, a stylesheet) still counts.
            if _DOCUMENT_4XX.match(msg.text) and msg.location.get("url") == page.url:
                return
            self.errors.append(f"{page.url}: {msg.text}")

        page.on("console", on_console)
        page.on("pageerror", lambda exc: self.errors.append(f"{page.url}: {exc}"))
        # Revoke/rotate/transition ask for confirmation; the tests confirm.
        page.on("dialog", lambda dialog: dialog.accept())
        return page


@contextmanager
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    path = chromium_path()
    assert path, "chromium is not installed (make test installs Debian's package)"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, headless=True, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


def wait_page(page: Any, check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Reload until ``check`` holds (the request log and the usage rollup trail the call)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what} on {page.url}")
        time.sleep(0.3)
        page.reload()


def shoot(page: Any, out: Path, name: str) -> list[Path]:
    shots = []
    for label, size in WIDTHS.items():
        page.set_viewport_size(size)
        path = out / f"{name}-{label}.png"
        page.screenshot(path=str(path), full_page=True)
        shots.append(path)
    page.set_viewport_size(WIDTHS["laptop"])
    return shots
