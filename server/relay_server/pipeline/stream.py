"""The stream relay: provider chunks → client chunks, one small state machine.

States: waiting for the first chunk → relaying deltas → usage seen → done.
Providers always end with a usage chunk (``choices: []``); the client sees it
only if it asked with ``stream_options.include_usage`` — and then, as OpenAI
does, every other chunk carries ``"usage": null``.  Usage and time to first
token are recorded on the request context for metering, whatever the client
asked for, including when the client goes away mid-stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from relay_server.pipeline.context import RequestContext
from relay_server.providers.base import Usage


def is_usage_chunk(chunk: dict[str, Any]) -> bool:
    return not chunk.get("choices") and chunk.get("usage") is not None


async def relay_stream(ctx: RequestContext, chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    async for chunk in chunks:
        if is_usage_chunk(chunk):
            ctx.usage = Usage.from_openai(chunk["usage"])
            if ctx.include_usage:
                yield chunk
            continue
        ctx.mark_first_token()
        if ctx.include_usage:
            chunk = {**chunk, "usage": None}
        elif "usage" in chunk:
            # Some providers put usage on the last content chunk; strip what the client did not ask for.
            usage = Usage.from_openai(chunk.get("usage"))
            if usage is not None:
                ctx.usage = usage
            chunk = {k: v for k, v in chunk.items() if k != "usage"}
        yield chunk
