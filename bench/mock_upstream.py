"""A fast mock OpenAI upstream for Relay's benchmarks.

Cheap on CPU so it does not steal the cores the gateway is measured on:
asyncio streams on uvloop, HTTP/1.1 with keep-alive, response bodies built
once at start-up, and request bodies parsed only for ``stream`` and
``stream_options``.

Routes (any ``Authorization`` is accepted; a count of requests with one is
kept so the bench can tell that Relay forwarded a credential):

* ``POST /v1/chat/completions``: one JSON body, or with ``"stream": true`` an
  SSE stream of ``--chunks`` content chunks ``--chunk-interval-ms`` apart, a
  usage chunk when ``stream_options.include_usage`` is set, then
  ``data: [DONE]``.
* ``POST /v1/embeddings``: one ``--embedding-dims`` vector per request.
* ``GET /v1/models``: a fixed list.
* ``GET /stats``: request counts per route, as JSON (not an OpenAI route).

``--latency-ms`` delays every answer's headers (time to first byte).

Run: ``python bench/mock_upstream.py --port 0``; the first line on stdout is
``READY <port>``.  Binds 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import orjson

MODEL = "gpt-4o-mini"
PROMPT_TOKENS = 12
_REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 405: b"Method Not Allowed", 413: b"Payload Too Large"}
_MAX_BODY = 8 * 1024 * 1024


@dataclass
class MockConfig:
    latency_s: float = 0.0
    chunks: int = 20
    chunk_interval_s: float = 0.005
    embedding_dims: int = 1536


@dataclass
class MockState:
    config: MockConfig
    counts: Counter[str] = field(default_factory=Counter)
    # Prebuilt bodies: the mock must cost next to nothing per request.
    chat_body: bytes = b""
    embedding_body: bytes = b""
    models_body: bytes = b""
    stream_chunks: list[bytes] = field(default_factory=list)
    usage_frame: bytes = b""

    def build(self) -> None:
        created = int(time.time())
        words = [f"word{i} " for i in range(self.config.chunks)]
        completion_tokens = len(words)
        usage = {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": completion_tokens,
            "total_tokens": PROMPT_TOKENS + completion_tokens,
        }
        self.chat_body = orjson.dumps(
            {
                "id": "chatcmpl-benchmock",
                "object": "chat.completion",
                "created": created,
                "model": MODEL,
                "system_fingerprint": "fp_benchmock",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "".join(words).strip()},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
            }
        )
        vector = [round(((i * 7919) % 2000) / 1000.0 - 1.0, 6) for i in range(self.config.embedding_dims)]
        self.embedding_body = orjson.dumps(
            {
                "object": "list",
                "data": [{"object": "embedding", "index": 0, "embedding": vector}],
                "model": "text-embedding-3-small",
                "usage": {"prompt_tokens": 9, "total_tokens": 9},
            }
        )
        self.models_body = orjson.dumps(
            {
                "object": "list",
                "data": [
                    {"id": m, "object": "model", "created": created, "owned_by": "openai"}
                    for m in (MODEL, "gpt-4o", "text-embedding-3-small")
                ],
            }
        )

        def chunk(delta: dict[str, str], finish: str | None) -> bytes:
            payload = {
                "id": "chatcmpl-benchmock",
                "object": "chat.completion.chunk",
                "created": created,
                "model": MODEL,
                "system_fingerprint": "fp_benchmock",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }
            return _sse(orjson.dumps(payload))

        # OpenAI's shape: a role chunk, content chunks, a finish chunk.
        self.stream_chunks = [chunk({"role": "assistant", "content": ""}, None)]
        self.stream_chunks += [chunk({"content": w}, None) for w in words]
        self.stream_chunks.append(chunk({}, "stop"))
        self.usage_frame = _sse(
            orjson.dumps(
                {
                    "id": "chatcmpl-benchmock",
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": MODEL,
                    "choices": [],
                    "usage": usage,
                }
            )
        )


def _sse(data: bytes) -> bytes:
    return b"data: " + data + b"\n\n"


def _chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _head(status: int, content_type: bytes, *, length: int | None) -> bytes:
    lines = [b"HTTP/1.1 %d %s" % (status, _REASONS.get(status, b"Error")), b"content-type: " + content_type]
    lines.append(b"content-length: %d" % length if length is not None else b"transfer-encoding: chunked")
    lines.append(b"x-request-id: req_benchmock")
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _error(status: int, message: str, code: str) -> bytes:
    body = orjson.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}})
    return _head(status, b"application/json", length=len(body)) + body


class _BadRequest(Exception):
    pass


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str], bytes] | None:
    """One request (method, path, lower-case headers, body); None at a clean EOF."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise _BadRequest("truncated request head") from None
        return None
    except asyncio.LimitOverrunError:
        raise _BadRequest("request head too large") from None
    lines = head[:-4].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise _BadRequest("malformed request line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise _BadRequest("malformed header line")
        headers[name.strip().lower()] = value.strip()
    body = b""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        pieces: list[bytes] = []
        total = 0
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                    pass
                break
            total += size
            if total > _MAX_BODY:
                raise _BadRequest("body too large")
            pieces.append((await reader.readexactly(size + 2))[:-2])
        body = b"".join(pieces)
    elif "content-length" in headers:
        length = int(headers["content-length"])
        if length < 0 or length > _MAX_BODY:
            raise _BadRequest("bad content-length")
        body = await reader.readexactly(length)
    return parts[0], parts[1].split("?", 1)[0], headers, body


async def _stream(state: MockState, writer: asyncio.StreamWriter, include_usage: bool) -> None:
    writer.write(_head(200, b"text/event-stream", length=None))
    interval = state.config.chunk_interval_s
    for i, frame in enumerate(state.stream_chunks):
        # The role chunk goes out with the headers; content chunks are paced.
        if i > 0 and interval > 0:
            await asyncio.sleep(interval)
        writer.write(_chunked(frame))
        await writer.drain()
    tail = (state.usage_frame if include_usage else b"") + b"data: [DONE]\n\n"
    writer.write(_chunked(tail) + b"0\r\n\r\n")


def _wants_stream(body: bytes) -> tuple[bool, bool]:
    """(stream, include_usage) from a chat body; raises _BadRequest on bad JSON."""
    try:
        parsed = orjson.loads(body) if body else {}
    except orjson.JSONDecodeError:
        raise _BadRequest("body is not JSON") from None
    if not isinstance(parsed, dict):
        raise _BadRequest("body is not a JSON object")
    stream = parsed.get("stream") is True
    options = parsed.get("stream_options")
    return stream, stream and isinstance(options, dict) and options.get("include_usage") is True


async def _handle(state: MockState, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            try:
                request = await _read_request(reader)
            except (_BadRequest, ValueError) as exc:
                writer.write(_error(400, str(exc), "invalid_request"))
                return
            if request is None:
                return
            method, path, headers, body = request
            state.counts[path] += 1
            if headers.get("authorization"):
                state.counts["authorized"] += 1
            if state.config.latency_s > 0 and path != "/stats":
                await asyncio.sleep(state.config.latency_s)
            try:
                await _answer(state, writer, method, path, body)
            except _BadRequest as exc:
                writer.write(_error(400, str(exc), "invalid_request"))
            await writer.drain()
            if headers.get("connection", "").lower() == "close":
                return
    except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return
    finally:
        writer.close()


async def _answer(state: MockState, writer: asyncio.StreamWriter, method: str, path: str, body: bytes) -> None:
    if path == "/v1/chat/completions" and method == "POST":
        stream, include_usage = _wants_stream(body)
        if stream:
            await _stream(state, writer, include_usage)
        else:
            writer.write(_head(200, b"application/json", length=len(state.chat_body)) + state.chat_body)
    elif path == "/v1/embeddings" and method == "POST":
        writer.write(_head(200, b"application/json", length=len(state.embedding_body)) + state.embedding_body)
    elif path == "/v1/models" and method == "GET":
        writer.write(_head(200, b"application/json", length=len(state.models_body)) + state.models_body)
    elif path == "/stats" and method == "GET":
        stats = orjson.dumps(dict(state.counts))
        writer.write(_head(200, b"application/json", length=len(stats)) + stats)
    elif path in ("/v1/chat/completions", "/v1/embeddings", "/v1/models", "/stats"):
        writer.write(_error(405, f"{method} is not allowed on {path}", "method_not_allowed"))
    else:
        writer.write(_error(404, f"Unknown URL {path}", "unknown_url"))


async def start(config: MockConfig, port: int = 0) -> asyncio.Server:
    """A listening mock on 127.0.0.1:``port`` (0 = any free port)."""
    state = MockState(config)
    state.build()
    return await asyncio.start_server(
        lambda r, w: _handle(state, r, w), host="127.0.0.1", port=port, backlog=1024, limit=256 * 1024
    )


async def serve(config: MockConfig, port: int) -> None:
    """Serve until cancelled; prints ``READY <port>`` once listening."""
    server = await start(config, port)
    sys.stdout.write(f"READY {server.sockets[0].getsockname()[1]}\n")
    sys.stdout.flush()
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Mock OpenAI upstream for Relay's benchmarks (127.0.0.1 only).")
    parser.add_argument("--port", type=int, default=0, help="0 = any free port (printed as READY <port>)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay before every answer")
    parser.add_argument("--chunks", type=int, default=20, help="content chunks per stream")
    parser.add_argument("--chunk-interval-ms", type=float, default=5.0, help="pause between stream chunks")
    parser.add_argument("--embedding-dims", type=int, default=1536)
    args = parser.parse_args(argv)
    if args.chunks < 1 or args.embedding_dims < 1 or args.latency_ms < 0 or args.chunk_interval_ms < 0:
        parser.error("--chunks and --embedding-dims must be positive; latencies must not be negative")
    config = MockConfig(args.latency_ms / 1000, args.chunks, args.chunk_interval_ms / 1000, args.embedding_dims)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    try:
        asyncio.run(serve(config, args.port))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
