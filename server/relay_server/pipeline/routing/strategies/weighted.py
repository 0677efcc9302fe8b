"""``weighted``: smooth weighted round robin over the targets.

Deterministic and exact over a window: with weights 3 and 1, every 4 consecutive requests of
this worker go 3 to the first target and 1 to the second, interleaved (never 3 in a row when
avoidable).  Each worker keeps its own counters, so the whole fleet is fair too (the sum of
fair sequences) without a Redis round trip per request.  The chosen target's routes come first;
the other targets follow in the operator's order as failover.
"""

from __future__ import annotations

from collections.abc import Sequence

from relay_server.domain.routing import Target, VirtualModel
from relay_server.pipeline.routing.strategies import Option, Ranked, Signals


class Weighted:
    name = "weighted"

    def __init__(self) -> None:
        # (virtual model id, its targets) -> current SWRR weights; a changed target list starts over.
        self._current: dict[tuple[str, tuple[Target, ...]], list[int]] = {}

    def pick(self, vm: VirtualModel, usable: Sequence[Target]) -> Target:
        key = (vm.id, vm.targets)
        current = self._current.get(key)
        if current is None:
            if len(self._current) > 4096:  # bounded: old target lists of edited aliases
                self._current.clear()
            current = self._current[key] = [0] * len(vm.targets)
        best = -1
        total = 0
        for i, target in enumerate(vm.targets):
            if target not in usable:
                continue  # out of reach for this request (residency, capability): not counted
            current[i] += target.weight
            total += target.weight
            if best < 0 or current[i] > current[best]:
                best = i
        current[best] -= total
        return vm.targets[best]

    def rank(self, vm: VirtualModel, options: Sequence[Option], signals: Signals) -> Ranked:
        usable = list(dict.fromkeys(o.target for o in options))
        chosen = self.pick(vm, usable)
        first = [o for o in options if o.target == chosen]
        total = sum(t.weight for t in usable)
        return Ranked(first + [o for o in options if o.target != chosen], f"weighted {chosen.weight}/{total}")
