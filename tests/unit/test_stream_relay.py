"""The stream relay: usage always recorded, shown to the client only when asked."""

from __future__ import annotations

from relay_server.domain.request import RequestContext
from relay_server.pipeline.stream import relay_stream

CHUNKS = [
    {"id": "c", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]},
    {"id": "c", "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]},
    {"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    {"id": "c", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}},
]


async def _source():
    for chunk in CHUNKS:
        yield chunk


async def _run(include_usage: bool):
    ctx = RequestContext(request_id="r", kind="chat", body={}, include_usage=include_usage, stream=True)
    out = [c async for c in relay_stream(ctx, _source())]
    return ctx, out


async def test_usage_hidden_but_recorded_when_not_requested() -> None:
    ctx, out = await _run(False)
    assert len(out) == 3 and all("usage" not in c for c in out)
    assert ctx.usage is not None and ctx.usage.total_tokens == 4
    assert ctx.first_token_ns is not None


async def test_usage_chunk_last_and_null_usage_elsewhere_when_requested() -> None:
    _ctx, out = await _run(True)
    assert len(out) == 4
    assert all(c["usage"] is None for c in out[:3])
    assert out[-1]["choices"] == [] and out[-1]["usage"]["total_tokens"] == 4
    assert CHUNKS[1].get("usage", "absent") == "absent"  # the provider's chunks were not mutated
