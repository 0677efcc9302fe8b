"""A small HTTP egress proxy on loopback, as enterprises run in front of the internet.

* ``CONNECT host:port`` opens a tunnel (``200 Connection established``) and
  then copies bytes both ways: TLS to the upstream runs inside, unseen.
* A request in absolute form (``POST http://host:port/path``) is forwarded:
  the proxy connects to that host and copies the connection both ways
  (every request on one client connection goes to the same upstream, which is
  how the clients under test pool them).
* With ``credentials=("user", "pass")`` anything without the matching
  ``Proxy-Authorization: Basic`` gets ``407 Proxy Authentication Required``.

It records what it saw (tunnels, forwarded request lines, authorizations) so
tests assert what went over the wire.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from urllib.parse import urlsplit


class FakeProxy:
    def __init__(self, credentials: tuple[str, str] | None = None) -> None:
        self.credentials = credentials
        self.connections = 0
        self.tunnels: list[str] = []
        """``host:port`` of every CONNECT that was granted."""
        self.forwarded: list[str] = []
        """Request lines of absolute-form requests forwarded."""
        self.refused = 0
        self.authorizations: list[str | None] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> FakeProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def url(self, userinfo: str = "") -> str:
        return f"http://{userinfo + '@' if userinfo else ''}127.0.0.1:{self.port}"

    def _authorized(self, headers: dict[str, str]) -> bool:
        given = headers.get("proxy-authorization")
        self.authorizations.append(given)
        if self.credentials is None:
            return True
        expected = "Basic " + base64.b64encode(":".join(self.credentials).encode()).decode()
        return given == expected

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        upstream_writer: asyncio.StreamWriter | None = None
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
            lines = raw.decode("latin-1").split("\r\n")[:-2]
            method, target, _ = lines[0].split(" ", 2)
            headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
            if not self._authorized(headers):
                self.refused += 1
                writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                             b"Proxy-Authenticate: Basic realm=\"egress\"\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
                return
            if method == "CONNECT":
                host, _, port = target.rpartition(":")
                up_reader, upstream_writer = await asyncio.open_connection(host.strip("[]"), int(port))
                self.tunnels.append(target)
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                await writer.drain()
            else:
                parts = urlsplit(target)
                assert parts.scheme == "http" and parts.hostname, f"not absolute form: {lines[0]}"
                up_reader, upstream_writer = await asyncio.open_connection(parts.hostname, parts.port or 80)
                self.forwarded.append(lines[0])
                upstream_writer.write(raw)
            await asyncio.gather(_copy(reader, upstream_writer), _copy(up_reader, writer))
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            pass  # torn down by __aexit__
        finally:
            writer.close()
            if upstream_writer is not None:
                upstream_writer.close()


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until EOF or error, then close the other side (a hang-up travels through)."""
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()
