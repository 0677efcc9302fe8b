"""``priority``: the targets in the order the operator listed them (a fallback chain)."""

from __future__ import annotations

from collections.abc import Sequence

from relay_server.domain.routing import VirtualModel
from relay_server.pipeline.routing.strategies import Option, Ranked, Signals


class Priority:
    name = "priority"

    def rank(self, vm: VirtualModel, options: Sequence[Option], signals: Signals) -> Ranked:
        return Ranked(list(options), "priority")
