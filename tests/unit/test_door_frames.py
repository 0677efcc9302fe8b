"""The door loop: what one upstream read brought leaves as one frame, the stream's end with the
last of it, and the client's bytes are exactly the per-item frames joined."""

from __future__ import annotations

from types import SimpleNamespace

from relay_server.api import door
from relay_server.api.openai_service import OpenAISSE
from relay_server.domain.routing import RouteNote


class _Session:
    """Items in reads: ``buffered`` counts what is left of the current read."""

    def __init__(self, reads: list[list[dict]]) -> None:
        self._reads = [list(r) for r in reads]
        self._current: list[dict] = []
        self.closed = False

    @property
    def buffered(self) -> int:
        # The next read has not "arrived" until it is asked for; the end is known with the last read.
        return len(self._current) + (0 if self._reads else 1)

    def __aiter__(self):  # noqa: ANN204
        return self

    async def __anext__(self) -> dict:
        if not self._current:
            if not self._reads:
                raise StopAsyncIteration
            self._current = self._reads.pop(0)
        return self._current.pop(0)

    async def aclose(self) -> None:
        self.closed = True


class _Pipeline:
    def __init__(self, session: _Session) -> None:
        self._session = session

    async def admit(self, kind, body, metadata, request_id, **_):  # noqa: ANN001, ANN201
        return SimpleNamespace(ctx=SimpleNamespace(stream=True, route=RouteNote("fast", "m@p", "priority")), headers={}, cache=None)

    def session(self, admitted):  # noqa: ANN001, ANN201
        return self._session


class _Context:
    def __init__(self) -> None:
        self.headers = None

    async def send_initial_metadata(self, headers) -> None:  # noqa: ANN001
        self.headers = headers


def _chunk(text: str) -> dict:
    return {"choices": [{"index": 0, "delta": {"content": text}}]}


async def _frames(reads: list[list[dict]]) -> tuple[list[bytes], _Session]:
    session = _Session(reads)
    served = door.serve(
        _Pipeline(session), _Context(), kind="chat", door="openai", decode=lambda: ({}, None),  # type: ignore[arg-type]
        encoder=OpenAISSE, request_id="req_1", metadata={},
    )
    return [frame.data async for frame in served], session


async def test_each_read_is_one_frame_and_the_end_rides_with_the_last() -> None:
    reads = [[_chunk("a")], [_chunk("b"), _chunk("c")], [_chunk("d"), _chunk("e")]]
    frames, session = await _frames(reads)
    expected = [OpenAISSE(None).item(c)[0].data for r in reads for c in r]  # type: ignore[arg-type]
    assert len(frames) == 3
    assert frames[0] == expected[0]
    assert frames[1] == expected[1] + expected[2]
    assert frames[2] == expected[3] + expected[4] + b"data: [DONE]\n\n"
    assert session.closed


async def test_an_empty_stream_is_just_its_end() -> None:
    frames, _ = await _frames([])
    assert frames == [b"data: [DONE]\n\n"]
