"""Fault injection, and the server plumbing every fake provider shares.

A fault is chosen per request, first match wins:
1. the fake's queue (``fake.inject(Fault(...), ...)``, one fault per request, FIFO);
2. an ``x-fake-fault`` request header;
3. a ``[[fault:...]]`` marker in the request text (survives translation, so
   end-to-end tests can steer a fake through Relay).

Header and marker use the spec syntax of ``parse_fault``, e.g.
``status=429;retry_after=3`` or ``disconnect_after=2`` or ``hang;chunk_delay=0.01``.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Any

from aiohttp import web

FAULT_HEADER = "x-fake-fault"
_MARKER = re.compile(r"\[\[fault:([^\]]*)\]\]")


@dataclass
class Fault:
    status: int | None = None
    """Answer with this HTTP status and a provider-shaped error body."""
    message: str = "injected fault"
    code: str | None = None
    retry_after: str | None = None
    delay_s: float = 0.0
    """Wait this long before the response headers (slow first byte)."""
    chunk_delay_s: float = 0.0
    disconnect_after: int | None = None
    """Close the connection abruptly after this many stream frames."""
    end_after: int | None = None
    """End the body cleanly after this many frames, without the end marker."""
    malformed_after: int | None = None
    """Send a frame that is not JSON after this many stream frames."""
    error_event_after: int | None = None
    """Send the provider's in-band error event after this many frames, then end."""
    no_usage: bool = False
    """Stream without any usage report."""
    hang: bool = False
    """Keep streaming content until the client goes away."""


_SPEC_NAMES = {
    "delay": "delay_s",
    "chunk_delay": "chunk_delay_s",
}


def parse_fault(spec: str) -> Fault:
    """``"status=500;delay=0.1;no_usage"`` -> ``Fault``."""
    types = {f.name: f.type for f in fields(Fault)}
    values: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in spec.split(";"))):
        key, sep, raw = item.partition("=")
        name = _SPEC_NAMES.get(key.strip(), key.strip())
        if name not in types:
            raise ValueError(f"unknown fault field {key!r}")
        kind = str(types[name])
        if not sep:
            values[name] = True
        elif kind.startswith("int"):
            values[name] = int(raw)
        elif kind.startswith("float"):
            values[name] = float(raw)
        else:
            values[name] = raw
    return Fault(**values)


@dataclass
class Reply:
    """What the fake model answers: text, and/or tool calls ``(name, arguments)``."""

    text: str = "Hello from the fake provider, nice to meet you."
    tool_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    thinking: str = ""
    """Reasoning before the text: a thinking block (Anthropic), ``reasoning_content`` (OpenAI-compatible)."""


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    """Lower-cased names."""
    body: Any
    peer_port: int | None


class StreamCut(Exception):
    """The fake stopped a stream on purpose (fault) or the client went away."""


def count_tokens(text: str) -> int:
    """The fakes' tokenizer: whitespace-separated words.  Deterministic, so a test
    can predict exactly what a fake will report and bill."""
    return len(text.split())


def pieces(text: str) -> list[str]:
    """Stream pieces: one word (with its trailing space) per piece = per token."""
    return re.findall(r"\S+\s*", text)


def json_pieces(text: str, size: int = 8) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def texts_in(value: Any) -> Iterable[str]:
    """Every string under ``value`` (messages, parts, prompts)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from texts_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from texts_in(item)


class FakeServer:
    """aiohttp.web on 127.0.0.1 (random port); subclasses add the routes."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.faults: deque[Fault] = deque()
        self.steady = Fault()
        """The fault of every request without one of its own (e.g. a steady latency: ``Fault(delay_s=0.05)``)."""
        self.replies: deque[Reply] = deque()
        self.default_reply = Reply()
        self.valid_keys: set[str] | None = None
        """When set, only these API keys are accepted (others get a 401)."""
        self.prompt_tokens_total = 0
        self.completion_tokens_total = 0
        self.disconnects = 0
        self.sent_streams: list[bytearray] = []
        """Every stream's bytes exactly as written (for byte-level passthrough tests)."""
        self.disconnected = asyncio.Event()
        self.base_url = ""
        self._runner: web.AppRunner | None = None

    def routes(self) -> list[web.RouteDef]:
        raise NotImplementedError

    async def __aenter__(self) -> FakeServer:
        app = web.Application()
        app.add_routes(self.routes())
        # handler_cancellation: a client disconnect cancels the handler, which is
        # how the fake notices (and records) that a client went away.
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # -- test API ----------------------------------------------------------

    def inject(self, *faults: Fault) -> None:
        self.faults.extend(faults)

    def reply_with(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    @property
    def last(self) -> RecordedRequest:
        return self.requests[-1]

    # -- for subclasses ----------------------------------------------------

    async def receive(self, request: web.Request) -> tuple[Any, Fault]:
        raw = await request.read()
        try:
            body = await request.json() if raw else None
        except ValueError:
            body = None
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.requests.append(
            RecordedRequest(
                request.method,
                request.path,
                {k.lower(): v for k, v in request.headers.items()},
                body,
                peer[1] if peer else None,
            )
        )
        return body, self._fault_for(request, body)

    def _fault_for(self, request: web.Request, body: Any) -> Fault:
        if self.faults:
            return self.faults.popleft()
        if FAULT_HEADER in request.headers:
            return parse_fault(request.headers[FAULT_HEADER])
        for text in texts_in(body):
            match = _MARKER.search(text)
            if match:
                return parse_fault(match.group(1))
        return self.steady

    def next_reply(self) -> Reply:
        return self.replies.popleft() if self.replies else self.default_reply

    def bill(self, prompt_tokens: int, completion_tokens: int) -> None:
        self.prompt_tokens_total += prompt_tokens
        self.completion_tokens_total += completion_tokens

    def mark_disconnected(self) -> None:
        self.disconnects += 1
        self.disconnected.set()

    async def run_stream(
        self,
        request: web.Request,
        fault: Fault,
        frames: Iterable[tuple[str | None, str]],
        *,
        error_frame: tuple[str | None, str],
        hang_frame: tuple[str | None, str],
    ) -> web.StreamResponse:
        """Send SSE ``(event, data)`` frames, applying the stream faults."""
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        sent = 0
        written = bytearray()
        self.sent_streams.append(written)

        async def send(event: str | None, data: str) -> None:
            nonlocal sent
            if fault.disconnect_after is not None and sent >= fault.disconnect_after:
                assert request.transport is not None
                request.transport.close()  # abrupt: no final chunk of the chunked body
                raise StreamCut
            if fault.end_after is not None and sent >= fault.end_after:
                await resp.write_eof()
                raise StreamCut
            if fault.error_event_after is not None and sent >= fault.error_event_after:
                await resp.write(_frame(*error_frame))
                raise StreamCut
            if fault.malformed_after is not None and sent == fault.malformed_after:
                await resp.write(b'data: {"choices": [ this is not json\n\n')
            if fault.chunk_delay_s:
                await asyncio.sleep(fault.chunk_delay_s)
            frame = _frame(event, data)
            written.extend(frame)
            await resp.write(frame)
            sent += 1

        try:
            await resp.prepare(request)
            for event, data in frames:
                await send(event, data)
            while fault.hang:
                await send(*hang_frame)
                await asyncio.sleep(fault.chunk_delay_s or 0.005)
            await resp.write_eof()
        except StreamCut:
            pass
        except (ConnectionError, asyncio.CancelledError):
            # The client closed the connection (or cancelled mid-write).
            self.mark_disconnected()
            raise
        return resp

    async def pause(self, fault: Fault) -> None:
        """The slow-first-byte fault; records a client that gave up waiting."""
        if fault.delay_s:
            try:
                await asyncio.sleep(fault.delay_s)
            except asyncio.CancelledError:
                self.mark_disconnected()
                raise


def _frame(event: str | None, data: str) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {data}\n\n".encode()


def json_error(status: int, body: dict[str, Any], retry_after: str | None = None) -> web.Response:
    headers = {"retry-after": retry_after} if retry_after is not None else None
    return web.json_response(body, status=status, headers=headers)
