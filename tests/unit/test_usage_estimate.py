"""Local token estimates and their reconciliation with provider usage.  No services."""

from __future__ import annotations

from decimal import Decimal

import pytest

from relay_server.domain.catalog import CatalogEntry
from relay_server.domain.provider import ProviderCall, Usage
from relay_server.pipeline.steps.usage_estimate import (
    OutputCounter,
    estimate_input_tokens,
    output_count_needed,
    reconcile,
    worst_case_output_tokens,
)
from relay_server.providers.testmode import TestModeProvider

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tell me about gateways."}]
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {
    "type": "object", "properties": {"q": {"type": "string"}, "n": {"type": "integer"}}, "required": ["q"]}}}]


def _entry(max_output: int | None = 16384, context: int = 128000) -> CatalogEntry:
    return CatalogEntry(
        model_id="m", relay_name="gpt-4o-mini", provider_id="openai", provider_api="openai", provider_name="m",
        kind="chat", input_cost_per_1m=Decimal(1), output_cost_per_1m=Decimal(1), context_window=context,
        max_output_tokens=max_output, owned_by="openai", created=0,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "body", "expected"),
    [
        ("chat", {"max_tokens": 100}, 100),
        ("chat", {"max_completion_tokens": 50, "max_tokens": 100}, 50),
        ("chat", {"max_tokens": 100, "n": 3}, 300),
        ("chat", {"max_tokens": 10**9}, 16384),
        ("chat", {}, 16384),
        ("chat", {"max_tokens": "many", "n": True}, 16384),
        ("completion", {}, 16),
        ("completion", {"max_tokens": 20, "n": 2, "best_of": 5}, 100),
        ("embedding", {"max_tokens": 100}, 0),
    ],
)
def test_worst_case_output(kind: str, body: dict, expected: int) -> None:
    assert worst_case_output_tokens(kind, body, _entry(), 10) == expected  # type: ignore[arg-type]


def test_without_a_model_maximum_the_context_left_bounds_the_output() -> None:
    assert worst_case_output_tokens("chat", {}, _entry(max_output=None, context=4096), 1000) == 3096
    assert worst_case_output_tokens("chat", {}, _entry(max_output=None, context=4096), 5000) == 0


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("extra", [{}, {"tools": TOOLS, "tool_choice": "required"}, {"n": 3}])
async def test_the_local_count_matches_what_test_mode_bills(stream: bool, extra: dict) -> None:
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 40, **extra}
    call = ProviderCall("chat", body, "gpt-4o-mini", "req_1")
    counter = OutputCounter()
    if stream:
        chunks = [c async for c in TestModeProvider().stream(call)]
        for chunk in chunks[:-1]:
            counter.add_chunk(chunk)
        usage = chunks[-1]["usage"]
    else:
        response = await TestModeProvider().complete(call)
        counter.add_response(response)
        usage = response["usage"]
    assert counter.tokens("gpt-4o-mini") == usage["completion_tokens"]
    assert estimate_input_tokens("chat", body, "gpt-4o-mini") == usage["prompt_tokens"]


def test_legacy_completion_and_embedding_inputs() -> None:
    assert estimate_input_tokens("completion", {"prompt": [[1, 2, 3], "hello"]}, "gpt-3.5-turbo-instruct") == 4
    assert estimate_input_tokens("embedding", {"input": ["a", "b"]}, "text-embedding-3-small") == 2


def test_the_counter_ignores_junk_and_knows_reasoning_tokens() -> None:
    counter = OutputCounter()
    counter.add_chunk({"choices": [None, {"index": "x", "delta": "text"}, {"delta": {"content": 5}}]})
    assert counter.empty and counter.tokens("gpt-4o") == 0
    counter.add_chunk({"choices": [{"index": 0, "delta": {"content": "Hello"}}]})
    counter.add_chunk({"choices": [{"index": 0, "delta": {"content": " world"}}]})
    counter.note_reported({"completion_tokens_details": {"reasoning_tokens": 64}})
    assert counter.tokens("gpt-4o") == 2 and counter.reasoning_tokens == 64 and counter.chars == 11


@pytest.mark.parametrize("chunk", [
    {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}}]},
    {"choices": [{"index": 2, "delta": {"content": " there"}}]},
    {"choices": [{"delta": {"content": None, "role": "assistant"}}]},
    {"choices": [{"index": 0, "delta": {"content": "a", "refusal": "no"}}]},
    {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": "{}"}}]}}]},
    {"choices": [{"index": 0, "text": "legacy", "delta": {"content": "x"}}]},
    {"choices": [{"index": True, "delta": {"content": "bool index"}}]},
])  # fmt: skip
def test_one_plain_choice_counts_as_the_general_walk_does(chunk: dict) -> None:
    """add_chunk's plain-delta path (one choice, content and role only) agrees with the walk over
    any other shape: the same text, under the same choice."""
    plain, walked = OutputCounter(), OutputCounter()
    plain.add_chunk(chunk)
    walked.add_chunk({"choices": [*chunk["choices"], None]})  # two entries: always the general walk
    assert (plain.chars, plain.empty, plain.tokens("gpt-4o")) == (walked.chars, walked.empty, walked.tokens("gpt-4o"))
    assert plain._choices.keys() == walked._choices.keys()  # noqa: SLF001


def test_provider_usage_is_billed_as_reported() -> None:
    reported = Usage(100, 50, cache_read_tokens=40)
    assert reconcile(reported, 90, 45).usage is reported
    assert reconcile(reported, 90, 45).source == "provider"
    assert reconcile(Usage(100, 50), 10, 5, slack=512).source == "provider"  # within the slack of small requests


def test_no_provider_usage_bills_the_local_count() -> None:
    result = reconcile(None, 120, 33)
    assert (result.usage, result.source) == (Usage(120, 33), "estimate")


def test_a_gross_over_report_bills_the_lower_count() -> None:
    result = reconcile(Usage(10_000, 9_000, cache_read_tokens=8_000), 1_000, 800, ratio=1.5, slack=100)
    assert result.source == "provider_capped"
    assert result.usage == Usage(1_000, 800, cache_read_tokens=1_000)


def test_reasoning_tokens_are_not_held_against_the_provider() -> None:
    # 5000 completion tokens of which 4800 reasoning: only 200 were visible, as counted.
    result = reconcile(Usage(100, 5_000), 100, 200, reasoning_tokens=4_800, slack=0)
    assert result.source == "provider" and result.usage.completion_tokens == 5_000
    inflated = reconcile(Usage(100, 9_000), 100, 200, reasoning_tokens=4_800, slack=0)
    assert inflated.source == "provider_capped" and inflated.usage.completion_tokens == 5_000


def test_the_output_is_counted_only_when_the_guard_can_use_it() -> None:
    assert output_count_needed(None)  # no report: the count is what is billed
    assert not output_count_needed(Usage(100, 512), slack=512)  # within the slack whatever the count
    assert output_count_needed(Usage(100, 513), slack=512)
    assert not output_count_needed(Usage(100, 5_000), reasoning_tokens=4_800, slack=512)  # 200 visible
    # Skipping is safe: with a zero count in place of the real one, the guard decides the same.
    for reported in (Usage(100, 0), Usage(100, 300), Usage(100, 512)):
        assert not output_count_needed(reported, slack=512)
        assert reconcile(reported, 100, 0, slack=512) == reconcile(reported, 100, 10_000, slack=512)
