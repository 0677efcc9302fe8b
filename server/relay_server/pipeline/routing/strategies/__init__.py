"""How a virtual model orders its targets: one module per strategy behind ``Strategy``.

A strategy sees the virtual model's usable options (one per target route, residency and
capabilities already applied, in the operator's order) and returns them best first, with the
reason the answer headers and the request log give.  Strategies do no I/O: what they need from
Redis (latency EWMAs) was read with the planner's other reads, in the same round trip.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from relay_server.domain.catalog import CatalogEntry
from relay_server.domain.routing import Target, VirtualModel
from relay_server.storage.postgres.providers import RouteRow
from relay_server.storage.redis.route_latency import RouteEwma


@dataclass(frozen=True, slots=True)
class Option:
    """One target route: the catalog model, the provider route, and the target it came from."""

    target: Target
    entry: CatalogEntry
    route: RouteRow

    @property
    def label(self) -> str:
        return f"{self.entry.relay_name}@{self.route.provider_id}"

    @property
    def pair(self) -> tuple[str, str]:
        return (self.entry.model_id, self.route.provider_id)


@dataclass(frozen=True, slots=True)
class Signals:
    """What a request brings to the choice."""

    stream: bool = False
    latency: Mapping[tuple[str, str], RouteEwma] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Ranked:
    options: list[Option]
    reason: str


class Strategy(Protocol):
    name: str

    def rank(self, vm: VirtualModel, options: Sequence[Option], signals: Signals) -> Ranked: ...


def strategies() -> dict[str, Strategy]:
    """One instance of each (weighted and lowest-latency keep per-worker counters)."""
    from relay_server.pipeline.routing.strategies.cost import LowestCost
    from relay_server.pipeline.routing.strategies.latency import LowestLatency
    from relay_server.pipeline.routing.strategies.priority import Priority
    from relay_server.pipeline.routing.strategies.weighted import Weighted

    made: list[Strategy] = [Priority(), Weighted(), LowestLatency(), LowestCost()]
    return {s.name: s for s in made}
