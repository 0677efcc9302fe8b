"""A minimal HTTP/1.1 keep-alive client for the bench's Python drivers.

Smaller and cheaper per request than a general client: the request bytes are
rendered once per scenario and written as they are, and the response is read
with ``Content-Length`` or chunked framing.  Loopback only.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


class HttpError(Exception):
    """The connection failed or the response was not valid HTTP/1.1."""


@dataclass(frozen=True, slots=True)
class Target:
    host: str
    port: int
    path: str

    @classmethod
    def parse(cls, url: str) -> Target:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"need an http://host:port/... URL, got {url!r}")
        if parts.hostname not in _LOOPBACK and not parts.hostname.startswith("127."):
            raise ValueError(f"the bench only talks to loopback addresses, not {parts.hostname!r}")
        return cls(parts.hostname, parts.port, parts.path or "/")


def render_request(target: Target, method: str, headers: Mapping[str, str], body: bytes) -> bytes:
    lines = [f"{method} {target.path} HTTP/1.1", f"Host: {target.host}:{target.port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Connection:
    """One keep-alive connection; reopened transparently after a close."""

    def __init__(self, target: Target, *, timeout_s: float = 30.0) -> None:
        self._target = target
        self._timeout = timeout_s
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is not None and self._writer is not None and not self._writer.is_closing():
            return self._reader, self._writer
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self._target.host, self._target.port, limit=1024 * 1024), self._timeout
            )
        except (TimeoutError, OSError) as exc:
            raise HttpError(f"connect: {exc!r}") from None
        self._reader, self._writer = reader, writer
        return reader, writer

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        """Send pre-rendered request bytes; (status, body)."""
        chunks: list[bytes] = []
        status = 0
        async for item in self.stream(raw):
            if isinstance(item, int):
                status = item
            else:
                chunks.append(item)
        return status, b"".join(chunks)

    async def stream(self, raw: bytes) -> AsyncGenerator[int | bytes, None]:
        """Send the request; yield the status (an int) once, then body pieces as they arrive."""
        reader, writer = await self._open()
        keep = False
        try:
            writer.write(raw)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self._timeout)
            status, headers = _parse_head(head)
            yield status
            if headers.get("transfer-encoding", "").lower() == "chunked":
                while True:
                    line = await asyncio.wait_for(reader.readuntil(b"\r\n"), self._timeout)
                    size = int(line.split(b";", 1)[0].strip(), 16)
                    if size == 0:
                        while (await asyncio.wait_for(reader.readuntil(b"\r\n"), self._timeout)) != b"\r\n":
                            pass
                        break
                    data = await asyncio.wait_for(reader.readexactly(size + 2), self._timeout)
                    yield data[:-2]
            elif "content-length" in headers:
                length = int(headers["content-length"])
                if length:
                    yield await asyncio.wait_for(reader.readexactly(length), self._timeout)
            else:
                yield await asyncio.wait_for(reader.read(), self._timeout)  # until close
                return
            keep = headers.get("connection", "").lower() != "close"
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            raise HttpError(f"read: {exc!r}") from None
        except TimeoutError:
            raise HttpError("read: timed out") from None
        finally:
            if not keep:
                self.close()


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head[:-4].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ValueError(f"bad status line {lines[0]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers
