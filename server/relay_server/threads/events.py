"""The event stream of an assistant reply, and reading it back.

Events, numbered 1, 2, 3, … in the buffer and on the wire (``id: N``):
  thread.message.created    {"object", "message": <reply, streaming>, "user_message": <the message it answers>}
  thread.message.delta      {"object", "message_id", "delta": {"content": "…"} | {"tool_calls": [...]}}
  thread.message.completed  {"object", "message": <final reply>}            (terminal)
  thread.message.failed     {"object", "message": <partial reply>, "error": {...}}  (terminal)
The stored payload bytes are exactly what goes on the wire, so a resumed
stream is byte-for-byte the rest of the original one.  After the terminal
event the server sends ``data: [DONE]``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

import orjson

from relay_server.storage.postgres.threads import MessageRow
from relay_server.storage.redis.stream_buffer import BufferedEvent, RedisStreamBuffer
from relay_server.text.chunks import ChunkAssembler
from relay_server.threads.blocks import reply_blocks
from relay_server.threads.render import message_json

CREATED = "thread.message.created"
DELTA = "thread.message.delta"
COMPLETED = "thread.message.completed"
FAILED = "thread.message.failed"
DONE = b"data: [DONE]\n\n"
_TERMINAL_PREFIXES = (b'{"object":"' + COMPLETED.encode() + b'"', b'{"object":"' + FAILED.encode() + b'"')


def frame(index: int, payload: bytes) -> bytes:
    return b"id: " + str(index).encode() + b"\ndata: " + payload + b"\n\n"


def is_terminal(payload: bytes) -> bool:
    return payload.startswith(_TERMINAL_PREFIXES)


def created(reply: Mapping[str, Any], user_message: Mapping[str, Any] | None) -> bytes:
    return orjson.dumps({"object": CREATED, "message": reply, "user_message": user_message})


def delta(message_id: str, value: Mapping[str, Any]) -> bytes:
    return orjson.dumps({"object": DELTA, "message_id": message_id, "delta": value})


def completed(reply: Mapping[str, Any]) -> bytes:
    return orjson.dumps({"object": COMPLETED, "message": reply})


def failed(reply: Mapping[str, Any], error: Mapping[str, Any]) -> bytes:
    return orjson.dumps({"object": FAILED, "message": reply, "error": error})


def delta_of(chunk: Mapping[str, Any]) -> dict[str, Any] | None:
    """What a chat chunk adds to the reply (choice 0), or None (role, finish and usage chunks)."""
    for choice in chunk.get("choices") or ():
        if not isinstance(choice, Mapping) or choice.get("index", 0) != 0:
            continue
        raw = choice.get("delta")
        if not isinstance(raw, Mapping):
            return None
        out: dict[str, Any] = {}
        if isinstance(raw.get("content"), str) and raw["content"]:
            out["content"] = raw["content"]
        if raw.get("tool_calls"):
            out["tool_calls"] = raw["tool_calls"]
        return out or None
    return None


def partial_blocks(payloads: Sequence[bytes]) -> list[dict[str, Any]]:
    """The reply so far, from its buffered delta events."""
    assembler = ChunkAssembler("chat")
    for payload in payloads:
        event = orjson.loads(payload)
        if event.get("object") == DELTA:
            assembler.add({"choices": [{"index": 0, "delta": event.get("delta") or {}}]})
    return reply_blocks(assembler.text(), assembler.tool_calls())


def synthesized(message: MessageRow) -> list[bytes]:
    """Events standing for a finished reply whose buffer has expired."""
    start = message_json(message, [], status="streaming")
    start["completed_at"] = 0
    out = [created(start, None)]
    text = "".join(b.get("text", "") for b in message.content if b.get("type") == "text")
    if text:
        out.append(delta(message.id, {"content": text}))
    final = message_json(message)
    out.append(failed(final, {"message": message.error or "", "type": "server_error", "param": None, "code": "stream_failed"})
               if message.status == "failed" else completed(final))
    return out


async def tail(
    buffer: RedisStreamBuffer,
    tenant_id: str,
    message_id: str,
    after: int,
    *,
    load: Callable[[], Awaitable[MessageRow | None]],
    block_ms: int = 1000,
) -> AsyncIterator[bytes]:
    """SSE frames after event ``after``: the buffered ones, then the live tail, then ``[DONE]``.

    When the buffer is gone (expired) the persisted reply stands in for it;
    while the reply is still being produced elsewhere this keeps waiting.
    """
    while True:
        events = await buffer.read(tenant_id, message_id, after, block_ms=block_ms)
        for event in events:
            yield frame(event.index, event.payload)
            after = event.index
            if is_terminal(event.payload):
                yield DONE
                return
        if events or await buffer.exists(tenant_id, message_id):
            continue
        message = await load()
        if message is None:
            return
        if message.status != "streaming":
            for index, payload in enumerate(synthesized(message), start=1):
                if index > after:
                    yield frame(index, payload)
            yield DONE
            return


async def buffered(buffer: RedisStreamBuffer, tenant_id: str, message_id: str) -> list[BufferedEvent]:
    """Every event buffered so far (non-blocking)."""
    out: list[BufferedEvent] = []
    after = 0
    while True:
        events = await buffer.read(tenant_id, message_id, after, block_ms=None)
        if not events:
            return out
        out.extend(events)
        after = events[-1].index
