"""``lowest-cost``: the cheapest target by catalog price (input + output per 1M tokens).

The planner already left out targets that cannot serve the request (tools, vision,
json_schema, context length); ties keep the operator's order.
"""

from __future__ import annotations

from collections.abc import Sequence

from relay_server.domain.routing import VirtualModel
from relay_server.pipeline.routing.strategies import Option, Ranked, Signals


class LowestCost:
    name = "lowest-cost"

    def rank(self, vm: VirtualModel, options: Sequence[Option], signals: Signals) -> Ranked:
        ranked = sorted(options, key=lambda o: o.entry.input_cost_per_1m + o.entry.output_cost_per_1m)  # stable
        best = ranked[0].entry
        return Ranked(ranked, f"lowest-cost ${best.input_cost_per_1m}/${best.output_cost_per_1m} per 1M")
