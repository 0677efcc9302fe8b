"""One pricing function, exact decimals, markup as the spec's worked example."""

from __future__ import annotations

from decimal import Decimal

from relay_server.domain.catalog import CatalogEntry
from relay_server.domain.pricing import price
from relay_server.domain.provider import Usage


def _entry(**kw) -> CatalogEntry:
    base = dict(
        model_id="gpt-5.5", relay_name="gpt-5.5", provider_id="openai", provider_api="openai", provider_name="gpt-5.5",
        kind="chat", input_cost_per_1m=Decimal("2.50"), output_cost_per_1m=Decimal("10.00"), context_window=128000,
        max_output_tokens=16384, owned_by="openai", created=0,
    )
    base.update(kw)
    return CatalogEntry(**base)


def test_the_spec_example() -> None:
    cost = price(_entry(), Usage(prompt_tokens=1000, completion_tokens=500))
    assert cost.input_cost == Decimal("0.00250000")
    assert cost.output_cost == Decimal("0.00500000")
    assert cost.provider_cost == Decimal("0.00750000")
    assert cost.total_cost == Decimal("0.00900000")
    assert cost.relay_revenue == Decimal("0.00150000")
    assert cost.total_micros == 9000


def test_negotiated_markup_and_no_floats() -> None:
    cost = price(_entry(), Usage(1000, 500), Decimal("0.15"))
    assert cost.total_cost == Decimal("0.00862500")
    assert all(isinstance(v, Decimal) for v in (cost.input_cost, cost.total_cost, cost.relay_revenue))


def test_cache_reads_use_their_own_price() -> None:
    entry = _entry(cache_read_cost_per_1m=Decimal("1.25"))
    cost = price(entry, Usage(prompt_tokens=1000, completion_tokens=0, cache_read_tokens=400))
    # 600 uncached × 2.50 + 400 cached × 1.25 per 1M
    assert cost.input_cost == Decimal("0.00200000")


def test_zero_usage_costs_nothing() -> None:
    assert price(_entry(), Usage(0, 0)).total_cost == 0
