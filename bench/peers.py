"""Peers in the bench: another gateway run against the same mock, in the same run.

Absolute figures move 3x between machines and between runs on one machine;
a ratio to a peer measured minutes apart on the same cores, with the same mock
and the same drivers, does not.  The peer is Portkey's open-source gateway
(npm ``@portkey-ai/gateway``), a bare proxy: no auth, limits, caps, metering or
request log.  Relay runs with all of those on.

The bench installs the peer itself, into a cache directory it owns
(``bench/.cache/peers/``, gitignored), with npm from the npm registry; ``make
up`` never does.  Install scripts are not run (``--ignore-scripts``): the
package's only one applies patch files that the published package does not
ship.  The package's own dependency ranges now resolve to versions under
which its streaming path answers 500 (``@hono/node-server`` 1.19 hands it an
immutable ``Headers``), so its transitive runtime dependencies are pinned to
the versions of the gateway's own ``package-lock.json`` at that release.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from relay_server.stack import processes

CACHE = Path(__file__).resolve().parent / ".cache" / "peers"
PORTKEY_PACKAGE = "@portkey-ai/gateway"
PORTKEY_VERSION = "1.15.2"
# From the gateway's package-lock.json at v1.15.2 (its direct runtime dependencies).
PORTKEY_PINS = {
    "@hono/node-server": "1.13.5",
    "@hono/node-ws": "1.2.0",
    "hono": "4.9.7",
    "ioredis": "5.8.0",
    "jose": "6.0.11",
    "ws": "8.18.3",
    "zod": "3.25.76",
}
NPM_TIMEOUT_S = 300
# Before its first measured run, per scenario: whichever bound comes first (JIT warm-up).
WARMUP_REQUESTS = 3000
WARMUP_S = 5.0


class PeerError(RuntimeError):
    pass


def manifest() -> dict[str, object]:
    """The cache directory's package.json: the peer at its pinned version, its deps at theirs."""
    return {
        "name": "relay-bench-peers",
        "private": True,
        "description": "Installed by bench/peers.py; never by make up.",
        "dependencies": {PORTKEY_PACKAGE: PORTKEY_VERSION},
        "overrides": dict(PORTKEY_PINS),
    }


def portkey_script(cache: Path = CACHE) -> Path:
    return cache / "node_modules" / PORTKEY_PACKAGE / "build" / "start-server.js"


def installed_version(cache: Path = CACHE) -> str | None:
    meta = cache / "node_modules" / PORTKEY_PACKAGE / "package.json"
    try:
        return str(json.loads(meta.read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None


def ensure_portkey(cache: Path = CACHE, echo: Callable[[str], object] = print) -> Path:
    """The gateway's entry script, installing it into ``cache`` first if needed."""
    wanted = json.dumps(manifest(), indent=2, sort_keys=True) + "\n"
    package_json = cache / "package.json"
    current = package_json.read_text() if package_json.exists() else ""
    if current == wanted and installed_version(cache) == PORTKEY_VERSION and portkey_script(cache).exists():
        return portkey_script(cache)
    npm, node = shutil.which("npm"), shutil.which("node")
    if npm is None or node is None:
        raise PeerError("node and npm are needed for --peers (Debian: apt-get install -y nodejs npm)")
    cache.mkdir(parents=True, exist_ok=True)
    package_json.write_text(wanted)
    echo(f"peers: installing {PORTKEY_PACKAGE}@{PORTKEY_VERSION} into {cache} (npm) ...")
    argv = [npm, "install", "--prefix", str(cache), "--no-audit", "--no-fund", "--omit=dev", "--ignore-scripts",
            "--no-package-lock"]  # fmt: skip
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=NPM_TIMEOUT_S, check=False, cwd=cache)
    except subprocess.TimeoutExpired:
        raise PeerError(f"npm install did not finish in {NPM_TIMEOUT_S}s") from None
    if out.returncode != 0 or installed_version(cache) != PORTKEY_VERSION:
        raise PeerError(f"npm install failed ({out.returncode}): {(out.stderr or out.stdout)[-600:]}")
    return portkey_script(cache)


def node_version() -> str:
    node = shutil.which("node")
    if node is None:
        return ""
    out = subprocess.run([node, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip()


@dataclass
class Peer:
    """One running peer gateway: how to reach it and which process to charge CPU to."""

    name: str
    version: str
    proc: subprocess.Popen[bytes]
    port: int
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def portkey_headers(mock_url: str) -> dict[str, str]:
    """Route every request to the mock: the OpenAI provider with a custom host
    (loopback hosts are trusted by the gateway's default TRUSTED_CUSTOM_HOSTS)."""
    return {
        "x-portkey-provider": "openai",
        "x-portkey-custom-host": mock_url,
        "Authorization": "Bearer sk-bench-direct",
    }


def start_portkey(script: Path, mock_url: str, log_path: Path) -> Peer:
    node = shutil.which("node")
    if node is None:
        raise PeerError("node is not on PATH")
    port = processes.free_port()
    # production + --headless: no log console, no per-request log stream, no browser UI.
    env = {**os.environ, "NODE_ENV": "production"}
    log = log_path.open("ab")
    proc = subprocess.Popen([node, str(script), f"--port={port}", "--headless"], env=env, stdout=log,
                            stderr=subprocess.STDOUT, cwd=script.parent)  # fmt: skip
    log.close()
    deadline = time.monotonic() + 30
    while not processes.port_open("127.0.0.1", port):
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log_path.read_text(errors="replace")[-500:] if log_path.exists() else ""
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            raise PeerError(f"portkey gateway did not start: {tail}")
        time.sleep(0.05)
    return Peer("portkey", PORTKEY_VERSION, proc, port, portkey_headers(mock_url))
