"""The stream relay: provider chunks → client chunks, one small state machine.

States: waiting for the first chunk → relaying deltas → usage seen → done.
Providers always end with a usage chunk (``choices: []``); the client sees it
only if it asked with ``stream_options.include_usage`` — and then, as OpenAI
does, every other chunk carries ``"usage": null``.  Usage and time to first
token are recorded on the request context for metering, whatever the client
asked for, including when the client goes away mid-stream.

Every delta that passes is also counted (``OutputCounter``): when the
provider never reports usage — it does not support it, or the client left
before the usage chunk — the output actually generated is billed from that.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from relay_server.domain.provider import Usage
from relay_server.domain.request import RequestContext
from relay_server.pipeline.steps.usage_estimate import OutputCounter


def is_usage_chunk(chunk: dict[str, Any]) -> bool:
    return not chunk.get("choices") and chunk.get("usage") is not None


async def relay_stream(
    ctx: RequestContext, chunks: AsyncIterator[dict[str, Any]], counter: OutputCounter | None = None
) -> AsyncGenerator[dict[str, Any], None]:
    async for chunk in chunks:
        raw_usage = chunk.get("usage")
        if raw_usage:
            # Usually the last chunk (choices: []), for some providers the last content chunk.
            ctx.usage = Usage.from_openai(raw_usage)
            if counter is not None:
                counter.note_reported(raw_usage)
        if is_usage_chunk(chunk):
            if ctx.include_usage:
                yield chunk
            continue
        ctx.mark_first_token()
        if counter is not None:
            counter.add_chunk(chunk)
        if ctx.include_usage:
            chunk = {**chunk, "usage": None}
        elif "usage" in chunk:
            chunk = {k: v for k, v in chunk.items() if k != "usage"}  # not asked for
        yield chunk
