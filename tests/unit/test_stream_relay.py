"""The stream session relays chunks: usage always recorded, shown to the client only when asked;
a native-dialect event passes untouched with its usage captured."""

from __future__ import annotations

from types import SimpleNamespace

from relay_server.domain.provider import NativeEvent, Usage
from relay_server.domain.request import RequestContext
from relay_server.pipeline.session import StreamSession
from relay_server.pipeline.steps.usage_estimate import OutputCounter

CHUNKS = [
    {"id": "c", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]},
    {"id": "c", "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]},
    {"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    {"id": "c", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}},
]


class _Pipeline:
    """Only what the session calls: a plan (unused here: the upstream is given) and the settlement."""

    def __init__(self) -> None:
        self.settled: list[tuple[BaseException | None, OutputCounter]] = []

    async def settle(self, admitted, error, counter) -> None:  # noqa: ANN001
        self.settled.append((error, counter))


class _Upstream:
    def __init__(self, items) -> None:  # noqa: ANN001
        self._items = iter(items)
        self.closed = False

    def __aiter__(self):  # noqa: ANN204
        return self

    async def __anext__(self):  # noqa: ANN204
        try:
            return next(self._items)
        except StopIteration:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        self.closed = True


def _session(items, include_usage: bool):  # noqa: ANN001, ANN202
    ctx = RequestContext(request_id="r", kind="chat", body={}, include_usage=include_usage, stream=True)
    admitted = SimpleNamespace(ctx=ctx, cache=None, dispatched=True, output=None)
    pipeline = _Pipeline()
    session = StreamSession(pipeline, admitted)  # type: ignore[arg-type]
    session._upstream = _Upstream(items)  # committed: the attempt loop is tested in test_failover
    return ctx, pipeline, session


async def test_usage_hidden_but_recorded_when_not_requested() -> None:
    ctx, pipeline, session = _session(CHUNKS, False)
    out = [c async for c in session]
    assert len(out) == 3 and all("usage" not in c for c in out)
    assert ctx.usage is not None and ctx.usage.total_tokens == 4
    assert ctx.first_token_ns is not None
    assert len(pipeline.settled) == 1 and pipeline.settled[0][0] is None


async def test_usage_chunk_last_and_null_usage_elsewhere_when_requested() -> None:
    _ctx, _, session = _session(CHUNKS, True)
    out = [c async for c in session]
    assert len(out) == 4
    assert all(c["usage"] is None for c in out[:3])
    assert out[-1]["choices"] == [] and out[-1]["usage"]["total_tokens"] == 4
    assert CHUNKS[1].get("usage", "absent") == "absent"  # the provider's chunks were not mutated


async def test_native_events_pass_untouched_with_their_merged_usage() -> None:
    events = [
        NativeEvent(b"event: message_start\ndata: {}\n\n", usage=Usage(10, 1)),
        NativeEvent(b"event: content_block_delta\ndata: {}\n\n", text="Hello there", output=True),
        NativeEvent(b"event: message_delta\ndata: {}\n\n", usage=Usage(10, 7)),
    ]
    ctx, pipeline, session = _session(events, False)
    out = [e async for e in session]
    assert out == events
    assert ctx.usage == Usage(10, 7)
    assert ctx.first_token_ns is not None
    assert not pipeline.settled[0][1].empty  # the output is counted for the fallback estimate


async def test_closing_early_settles_once_as_cancelled() -> None:
    _, pipeline, session = _session(CHUNKS, False)
    assert (await anext(session))["choices"]
    await session.aclose()
    await session.aclose()
    assert len(pipeline.settled) == 1
    assert pipeline.settled[0][0] is not None  # cancelled: billed for what was generated


async def test_a_failing_cache_store_neither_fails_the_stream_nor_loses_the_record() -> None:
    from relay_server.text.chunks import ChunkAssembler

    class BrokenCache:
        stored = 0

        async def store(self, response) -> None:  # noqa: ANN001
            BrokenCache.stored += 1
            raise ConnectionError("cache down")

    _, pipeline, session = _session(CHUNKS, False)
    session._admitted.cache = BrokenCache()
    session._assembler = ChunkAssembler("chat")  # a cache miss being assembled
    out = [c async for c in session]
    assert len(out) == 3 and BrokenCache.stored == 1
    assert len(pipeline.settled) == 1 and pipeline.settled[0][0] is None
