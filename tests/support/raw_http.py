"""A scripted raw HTTP/1.1 server on loopback (plain or TLS) for client tests.

Each test scripts its server: ``respond(ex)`` answers one request with raw
bytes and returns whether to keep the connection.  The server records every
connection, request and client hang-up, so tests assert what went over the
wire rather than what the client believes.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from relay_server.providers.translator import ProviderFailure, UpstreamRequest

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


@dataclass
class Seen:
    conn: int
    head: list[str]
    headers: dict[str, str]
    body: bytes


@dataclass
class Exchange:
    req: Seen
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    upstream: Upstream

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def until_hangup(self) -> bool:
        """Wait for the client to close (EOF or reset); the server then closes too."""
        with contextlib.suppress(ConnectionError):
            while await self.reader.read(65536):
                pass
        self.upstream.hangups += 1
        self.upstream.hung_up.set()
        return False


Respond = Callable[[Exchange], Awaitable[bool]]


async def answer_ok(ex: Exchange) -> bool:
    await ex.send(OK)
    return True


class Upstream:
    def __init__(self, respond: Respond = answer_ok, tls: ssl.SSLContext | None = None) -> None:
        self.respond = respond
        self.tls = tls
        self.connections = 0
        self.requests: list[Seen] = []
        self.hangups = 0
        self.hung_up = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Upstream:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def url(self, path: str = "/v1/chat/completions") -> str:
        return f"{'https' if self.tls else 'http'}://{'localhost' if self.tls else '127.0.0.1'}:{self.port}{path}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn = self.connections
        self.connections += 1
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode().split("\r\n")[:-2]
                headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:])}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                seen = Seen(conn, head, headers, body)
                self.requests.append(seen)
                if not await self.respond(Exchange(seen, reader, writer, self)):
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            self.hangups += 1  # the client closed the connection
            self.hung_up.set()
        except asyncio.CancelledError:
            pass  # torn down by __aexit__ (re-raising makes asyncio log it as an error)
        finally:
            writer.close()


def chunked(*parts: bytes, headers: bytes = b"") -> bytes:
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts)
    return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n" + headers + b"\r\n" + body + b"0\r\n\r\n"



async def hang_after(ex: Exchange, data: bytes) -> bool:
    await ex.send(data)
    return await ex.until_hangup()



def tls_contexts(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A self-signed certificate for localhost/127.0.0.1: (server context, client context trusting it)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    (tmp_path / "cert.pem").write_bytes(pem)
    (tmp_path / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    server.set_alpn_protocols(["h2", "http/1.1"])
    return server, ssl.create_default_context(cadata=pem.decode())


def request(url: str, **headers: str) -> UpstreamRequest:
    """A small JSON POST carrying a credential header."""
    return UpstreamRequest("POST", url, {"Authorization": "Bearer sk-test-1", **headers}, {"model": "m", "n": 1})


async def failure(awaitable: Awaitable[object]) -> ProviderFailure:
    """The ``ProviderFailure`` the awaitable raises (fails the test if none)."""
    try:
        await awaitable
    except ProviderFailure as exc:
        return exc
    raise AssertionError("expected a ProviderFailure")
