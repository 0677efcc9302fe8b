"""The retry / failover loop over a plan, with scripted providers and gates (no services)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from relay_server.domain.provider import Credential, ProviderCall
from relay_server.domain.request import RequestContext
from relay_server.errors import ErrorKind, RelayError
from relay_server.pipeline.routing.failover import complete_with_failover, outcome_of, stream_with_failover
from relay_server.pipeline.routing.route import Attempt, AttemptResult, RetryPolicy, RoutePlan
from relay_server.providers.translator import (
    ProviderFailure,
    classify_http_error,
    timeout_failure,
    truncated_failure,
)

pytestmark = pytest.mark.asyncio

OK = {"id": "chatcmpl-1", "object": "chat.completion", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}
CHUNKS = [
    {"id": "c", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
    {"id": "c", "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": "stop"}]},
    {"id": "c", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}},
]


def http_error(status: int, retry_after: str | None = None) -> ProviderFailure:
    headers = {"retry-after": retry_after} if retry_after else {}
    return classify_http_error(status, message=f"upstream {status}", code=None, param=None, headers=headers)


class Scripted:
    """A provider whose answers are scripted per call: a dict, an exception, or
    for streams a list of chunks optionally ending in an exception."""

    def __init__(self, name: str, *script: Any) -> None:
        self.name = name
        self.script = list(script)
        self.calls: list[ProviderCall] = []
        self.closed = 0

    def _next(self, call: ProviderCall) -> Any:
        self.calls.append(call)
        return self.script.pop(0) if self.script else OK

    async def complete(self, call: ProviderCall) -> dict[str, Any]:
        item = self._next(call)
        if isinstance(item, BaseException):
            raise item
        return item

    embed = complete

    async def stream(self, call: ProviderCall) -> AsyncIterator[dict[str, Any]]:
        item = self._next(call)
        try:
            if isinstance(item, BaseException):
                raise item
            for chunk in item if isinstance(item, list) else CHUNKS:
                if isinstance(chunk, BaseException):
                    raise chunk
                if chunk == "hang":
                    await asyncio.Event().wait()
                yield chunk
        finally:
            self.closed += 1


@dataclass
class Gate:
    name: str
    admit: bool = True
    opened: int = 0
    results: list[AttemptResult] = field(default_factory=list)

    async def open(self) -> Ticket | None:
        if not self.admit:
            return None
        self.opened += 1
        return Ticket(self, Credential(self.name, f"secret-{self.name}"))


@dataclass
class Ticket:
    gate: Gate
    credential: Credential | None

    async def close(self, result: AttemptResult) -> None:
        self.gate.results.append(result)


@dataclass
class Served:
    credential_id: str | None = None
    after_answer: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def metered(self) -> None:
        """What the pipeline's metering task does first: the answering attempt's bookkeeping."""
        for bookkeeping in self.after_answer:
            await bookkeeping()


class Sleeps:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def ctx(kind: str = "chat") -> RequestContext:
    return RequestContext(request_id="req_1", kind=kind, body={"model": "m"}, model="m")  # type: ignore[arg-type]


def attempt(provider: Scripted, gate: Gate | None, key: str) -> Attempt:
    call = ProviderCall("chat", {"model": "m"}, "m", "req_1")
    return Attempt(provider.name, provider, call, None, key, False, gate)


def plan(*attempts: Attempt, sleeps: Sleeps | None = None) -> RoutePlan:
    return RoutePlan(attempts, RetryPolicy(sleep=sleeps or Sleeps()))


# --- classification -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "err, outcome",
    [
        (http_error(500), "failure"),
        (http_error(503), "failure"),
        (timeout_failure(), "failure"),
        (truncated_failure(), "failure"),
        (http_error(429), "limited"),
        (http_error(401), "refused"),
        (http_error(403), "refused"),
        (http_error(400), "rejected"),
        (http_error(404), "rejected"),
        (http_error(422), "rejected"),
        (RelayError(ErrorKind.BAD_REQUEST, "x"), "rejected"),
    ],
)
async def test_failures_are_classified_per_the_spec(err: RelayError, outcome: str) -> None:
    assert outcome_of(err) == outcome


# --- non-streaming ------------------------------------------------------------------------


async def test_a_5xx_fails_over_to_the_next_key_after_the_backoff() -> None:
    a, b = Scripted("p", http_error(502)), Scripted("p")
    ga, gb, sleeps, served, c = Gate("k1"), Gate("k2"), Sleeps(), Served(), ctx()
    reply = await complete_with_failover(c, plan(attempt(a, ga, "k1"), attempt(b, gb, "k2"), sleeps=sleeps), served=served)
    assert reply is OK and c.attempts == 2 and served.credential_id == "k2"
    assert sleeps.waits == [0.1]
    # The failed attempt was closed before the next one (its breaker and key state steer the walk);
    # the answering one is closed after the answer, by the metering task.
    assert [r.outcome for r in ga.results] == ["failure"] and gb.results == []
    await served.metered()
    assert [r.outcome for r in gb.results] == ["success"] and gb.results[0].ended_at is not None
    assert gb.results[0].tokens == 5
    # Each call carried its own gate's credential; the planned call itself stays without one.
    assert a.calls[0].credential.api_key == "secret-k1" and b.calls[0].credential.api_key == "secret-k2"


async def test_a_provider_429_moves_to_the_next_key_at_once_and_never_back() -> None:
    a, b = Scripted("p", http_error(429, "7")), Scripted("p", http_error(500), http_error(500))
    ga, gb, sleeps = Gate("k1"), Gate("k2"), Sleeps()
    with pytest.raises(RelayError) as info:
        await complete_with_failover(ctx(), plan(attempt(a, ga, "k1"), attempt(b, gb, "k2"), sleeps=sleeps))
    # 429 -> k2 at once; k2 fails (500) -> retried on k2 after a backoff; k1 is never used again.
    assert len(a.calls) == 1 and len(b.calls) == 2
    assert sleeps.waits == [0.2]
    assert ga.results[0].outcome == "limited" and ga.results[0].retry_after_s == 7
    assert info.value.kind is ErrorKind.PROVIDER_ERROR


async def test_a_provider_4xx_is_returned_as_is_without_retry() -> None:
    a, b = Scripted("p", http_error(400)), Scripted("q")
    ga, gb, sleeps = Gate("k1"), Gate("k2"), Sleeps()
    with pytest.raises(ProviderFailure) as info:
        await complete_with_failover(ctx(), plan(attempt(a, ga, "k1"), attempt(b, gb, "k2"), sleeps=sleeps))
    assert info.value.http_status == 400 and info.value.message == "upstream 400"
    assert b.calls == [] and gb.opened == 0 and sleeps.waits == []
    assert ga.results[0].outcome == "rejected"


async def test_a_refused_credential_is_skipped_for_the_next_one() -> None:
    a, b = Scripted("p", http_error(401)), Scripted("p")
    reply = await complete_with_failover(ctx(), plan(attempt(a, Gate("k1"), "k1"), attempt(b, Gate("k2"), "k2")))
    assert reply is OK and len(a.calls) == 1


async def test_at_most_three_attempts_and_the_last_error_wins() -> None:
    providers = [Scripted(f"p{i}", http_error(500) if i < 2 else timeout_failure()) for i in range(5)]
    sleeps = Sleeps()
    with pytest.raises(RelayError) as info:
        await complete_with_failover(ctx(), plan(*(attempt(p, Gate(p.name), p.name) for p in providers), sleeps=sleeps))
    assert [len(p.calls) for p in providers] == [1, 1, 1, 0, 0]
    assert info.value.kind is ErrorKind.REQUEST_TIMEOUT and info.value.http_status == 504
    assert sleeps.waits == [0.1, 0.2]


async def test_a_single_key_is_retried_with_exponential_backoff() -> None:
    only = Scripted("p", http_error(503), http_error(503))
    sleeps, gate = Sleeps(), Gate("k1")
    assert await complete_with_failover(ctx(), plan(attempt(only, gate, "k1"), sleeps=sleeps)) is OK
    assert len(only.calls) == 3 and sleeps.waits == [0.1, 0.2]
    assert [r.outcome for r in gate.results] == ["failure", "failure", "success"]


async def test_candidates_whose_gate_refuses_are_skipped_without_counting_an_attempt() -> None:
    a, b = Scripted("p"), Scripted("q")
    c = ctx()
    assert await complete_with_failover(c, plan(attempt(a, Gate("k1", admit=False), "k1"), attempt(b, Gate("k2"), "k2"))) is OK
    assert a.calls == [] and c.attempts == 1 and c.provider_id == "q"


async def test_nothing_admitted_is_a_503() -> None:
    a = Scripted("p")
    with pytest.raises(RelayError) as info:
        await complete_with_failover(ctx(), plan(attempt(a, Gate("k1", admit=False), "k1")))
    assert info.value.kind is ErrorKind.NO_PROVIDER_AVAILABLE and a.calls == []
    with pytest.raises(RelayError) as info:
        await complete_with_failover(ctx(), plan())
    assert info.value.kind is ErrorKind.NO_PROVIDER_AVAILABLE


async def test_every_key_rate_limited_upstream_is_a_503_with_retry_after() -> None:
    a, b = Scripted("p", http_error(429, "3")), Scripted("p", http_error(429))
    with pytest.raises(RelayError) as info:
        await complete_with_failover(ctx(), plan(attempt(a, Gate("k1"), "k1"), attempt(b, Gate("k2"), "k2")))
    assert info.value.kind is ErrorKind.NO_PROVIDER_AVAILABLE and info.value.retry_after_s == 1
    assert len(a.calls) == len(b.calls) == 1


async def test_ungated_test_mode_attempts_are_not_retried() -> None:
    simulated = RelayError(ErrorKind.PROVIDER_ERROR, "Simulated: the provider returned an error after retries.")
    only = Scripted("test", simulated)
    with pytest.raises(RelayError) as info:
        await complete_with_failover(ctx(), [attempt(only, None, "")])
    assert info.value is simulated and len(only.calls) == 1


async def test_embeddings_go_through_embed() -> None:
    p = Scripted("p", {"object": "list", "data": []})
    assert (await complete_with_failover(ctx("embedding"), plan(attempt(p, Gate("k1"), "k1"))))["object"] == "list"


async def test_a_cancelled_call_reports_cancelled_and_propagates() -> None:
    p = Scripted("p", asyncio.CancelledError())
    gate = Gate("k1")
    with pytest.raises(asyncio.CancelledError):
        await complete_with_failover(ctx(), plan(attempt(p, gate, "k1")))
    assert [r.outcome for r in gate.results] == ["cancelled"]


# --- streaming ------------------------------------------------------------------------------


async def collect(stream: Any) -> list[dict[str, Any]]:
    async with stream as chunks:
        return [c async for c in chunks]


async def test_a_stream_fails_over_before_its_first_chunk() -> None:
    a, b = Scripted("p", http_error(502)), Scripted("p")
    ga, gb, served, c = Gate("k1"), Gate("k2"), Served(), ctx()
    chunks = await collect(stream_with_failover(c, plan(attempt(a, ga, "k1"), attempt(b, gb, "k2")), served=served))
    assert chunks == CHUNKS and served.credential_id == "k2" and c.attempts == 2
    assert gb.results == [] and [r.outcome for r in ga.results] == ["failure"]
    await served.metered()
    assert [r.outcome for r in gb.results] == ["success"] and gb.results[0].tokens == 4


async def test_a_stream_cut_before_any_chunk_also_fails_over() -> None:
    a, b = Scripted("p", [truncated_failure()]), Scripted("p")
    assert await collect(stream_with_failover(ctx(), plan(attempt(a, Gate("k1"), "k1"), attempt(b, Gate("k2"), "k2")))) == CHUNKS
    assert a.closed == 1


async def test_after_the_first_chunk_a_failure_propagates_and_nothing_is_retried() -> None:
    a, b = Scripted("p", [CHUNKS[0], truncated_failure()]), Scripted("p")
    ga = Gate("k1")
    got: list[dict[str, Any]] = []
    with pytest.raises(ProviderFailure):
        async with stream_with_failover(ctx(), plan(attempt(a, ga, "k1"), attempt(b, Gate("k2"), "k2"))) as chunks:
            async for chunk in chunks:
                got.append(chunk)
    assert got == [CHUNKS[0]] and b.calls == []
    assert [r.outcome for r in ga.results] == ["failure"] and a.closed == 1


async def test_a_4xx_before_the_first_chunk_is_returned_as_is() -> None:
    a, b = Scripted("p", http_error(422)), Scripted("p")
    with pytest.raises(ProviderFailure) as info:
        await collect(stream_with_failover(ctx(), plan(attempt(a, Gate("k1"), "k1"), attempt(b, Gate("k2"), "k2"))))
    assert info.value.http_status == 422 and b.calls == []


async def test_closing_the_stream_early_closes_the_upstream_and_reports_cancelled() -> None:
    a = Scripted("p", [CHUNKS[0], "hang"])
    gate = Gate("k1")
    stream = stream_with_failover(ctx(), plan(attempt(a, gate, "k1")))
    assert await anext(stream) == CHUNKS[0]
    await stream.aclose()
    assert a.closed == 1 and [r.outcome for r in gate.results] == ["cancelled"]


async def test_cancelling_the_consuming_task_closes_the_upstream() -> None:
    a = Scripted("p", [CHUNKS[0], "hang"])
    gate = Gate("k1")
    first = asyncio.Event()

    async def consume() -> None:
        async with stream_with_failover(ctx(), plan(attempt(a, gate, "k1"))) as chunks:
            async for _ in chunks:
                first.set()

    task = asyncio.create_task(consume())
    await first.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert a.closed == 1 and [r.outcome for r in gate.results] == ["cancelled"]


async def test_a_stream_with_nothing_admitted_is_a_503_before_any_chunk() -> None:
    with pytest.raises(RelayError) as info:
        await collect(stream_with_failover(ctx(), plan(attempt(Scripted("p"), Gate("k1", admit=False), "k1"))))
    assert info.value.kind is ErrorKind.NO_PROVIDER_AVAILABLE


async def test_a_call_with_its_credential_keeps_every_other_field() -> None:
    """``ProviderCall.with_credential`` lists the fields by hand: a new field must not be dropped."""
    call = ProviderCall(
        kind="chat", body={"model": "m"}, provider_model="pm", request_id="r", timeout_s=3.0, door="anthropic",
        native_body={"x": 1}, native_headers={"anthropic-version": "v"},
    )  # fmt: skip
    cred = Credential("k", "secret")
    assert call.with_credential(cred) == dataclasses.replace(call, credential=cred)
    assert len(dataclasses.fields(ProviderCall)) == 9  # a new field: add it to ``with_credential`` too
