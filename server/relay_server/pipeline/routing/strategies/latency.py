"""``lowest-latency``: the route with the lowest EWMA latency, shared by every worker through Redis.

The EWMA is time to first token for streams and total latency otherwise
(``pipeline/routing/latency.py`` updates both after each attempt, batched, off the request
path).  A route never measured is tried first.  Exploration: every ``explore_every``-th
request of a virtual model (per worker) goes to the route measured longest ago instead, so a
route that was slow and has recovered gets samples again and wins back its traffic.
"""

from __future__ import annotations

from collections.abc import Sequence

from relay_server.domain.routing import VirtualModel
from relay_server.pipeline.routing.strategies import Option, Ranked, Signals

EXPLORE_EVERY = 10


class LowestLatency:
    name = "lowest-latency"

    def __init__(self, explore_every: int = EXPLORE_EVERY) -> None:
        self._explore_every = explore_every
        self._counts: dict[str, int] = {}

    def rank(self, vm: VirtualModel, options: Sequence[Option], signals: Signals) -> Ranked:
        count = self._counts.get(vm.id, 0) + 1
        if len(self._counts) > 4096:
            self._counts.clear()
        self._counts[vm.id] = count

        def score(o: Option) -> float:
            ewma = signals.latency.get(o.pair)
            if ewma is None:
                return -1.0  # never measured: try it
            return ewma.ttft_ms if signals.stream else ewma.total_ms

        ranked = sorted(options, key=score)
        best = ranked[0]
        if len(ranked) > 1 and count % self._explore_every == 0:
            stalest = min(ranked, key=lambda o: signals.latency[o.pair].at_ms if o.pair in signals.latency else -1)
            if stalest is not best:
                return Ranked([stalest, *(o for o in ranked if o is not stalest)], "lowest-latency explore")
        measured = score(best)
        why = "unmeasured" if measured < 0 else f"{int(measured)} ms"
        return Ranked(ranked, f"lowest-latency {why}")
