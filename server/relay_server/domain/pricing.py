"""The one pricing function, exact decimals only.

cost = tokens × model price per 1M → provider cost; × (1 + markup) → billed.  ``relay_revenue`` is the
markup part; ``total_micros`` (billed, micro-USD, half-even) is the integer that spend caps, usage and
billing add up.  Floats never touch money.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

from relay_server.domain.catalog import CatalogEntry
from relay_server.domain.provider import Usage

DEFAULT_MARKUP = Decimal("0.20")
_MILLION = Decimal(1_000_000)
_QUANTUM = Decimal("0.00000001")  # NUMERIC(12,8) in the request log


@dataclass(frozen=True, slots=True)
class Cost:
    input_cost: Decimal
    output_cost: Decimal
    provider_cost: Decimal
    total_cost: Decimal
    """What the tenant is billed: provider cost × (1 + markup)."""
    relay_revenue: Decimal
    markup_rate: Decimal

    @property
    def total_micros(self) -> int:
        return int((self.total_cost * _MILLION).to_integral_value(ROUND_HALF_EVEN))


def price(entry: CatalogEntry, usage: Usage, markup_rate: Decimal = DEFAULT_MARKUP) -> Cost:
    """Price ``usage`` of ``entry``.  Cache reads/writes use their own prices when the catalog has them."""
    cached = min(usage.cache_read_tokens, usage.prompt_tokens)
    uncached_input = usage.prompt_tokens - cached
    input_cost = Decimal(uncached_input) * entry.input_cost_per_1m / _MILLION
    if cached:
        rate = entry.cache_read_cost_per_1m if entry.cache_read_cost_per_1m is not None else entry.input_cost_per_1m
        input_cost += Decimal(cached) * rate / _MILLION
    if usage.cache_write_tokens and entry.cache_write_cost_per_1m is not None:
        # Cache writes are billed at their premium over the plain input price already counted.
        premium = entry.cache_write_cost_per_1m - entry.input_cost_per_1m
        input_cost += Decimal(usage.cache_write_tokens) * premium / _MILLION
    output_cost = Decimal(usage.completion_tokens) * entry.output_cost_per_1m / _MILLION
    provider_cost = input_cost + output_cost
    total = provider_cost * (1 + markup_rate)
    return Cost(
        input_cost=input_cost.quantize(_QUANTUM),
        output_cost=output_cost.quantize(_QUANTUM),
        provider_cost=provider_cost.quantize(_QUANTUM),
        total_cost=total.quantize(_QUANTUM),
        relay_revenue=(total - provider_cost).quantize(_QUANTUM),
        markup_rate=markup_rate,
    )


def money_micros(amount: Decimal | int | None) -> int:
    """USD decimal → micro-USD, half-even (for display of NUMERIC sums)."""
    if amount is None:
        return 0
    return int((Decimal(amount) * 1_000_000).to_integral_value())
