"""Virtual models, budget routes and the route a request took (docs/routing.md)."""

from __future__ import annotations

from dataclasses import dataclass

STRATEGIES = ("priority", "weighted", "lowest-latency", "lowest-cost")
NEEDS = ("tools", "vision", "json_schema")  # what a catalog model may declare in ``capabilities``


@dataclass(frozen=True, slots=True)
class Target:
    """One place a virtual model can go: a catalog model, on one provider route or on all of them."""

    model: str
    provider_id: str | None = None
    weight: int = 1

    @property
    def label(self) -> str:
        return f"{self.model}@{self.provider_id}" if self.provider_id else self.model


@dataclass(frozen=True, slots=True)
class VirtualModel:
    id: str
    name: str
    tenant_id: str | None  # None: global
    strategy: str
    targets: tuple[Target, ...]
    fallbacks: tuple[str, ...] = ()  # models or virtual models tried after every target


@dataclass(frozen=True, slots=True)
class BudgetRoute:
    """At or above ``threshold_bp`` of the monthly cap (the key's when ``key_id``, else the
    tenant's), ``alias`` is served by ``route_to``."""

    id: str
    tenant_id: str
    key_id: str | None
    alias: str
    route_to: str
    threshold_bp: int

    def fires(self, spent_micros: int, cap_micros: int) -> bool:
        """Exact in integers: spent / cap >= threshold_bp / 10000."""
        return cap_micros > 0 and spent_micros * 10_000 >= cap_micros * self.threshold_bp


@dataclass(slots=True)
class RouteNote:
    """What the answer headers and the request log say about the route taken."""

    alias: str | None = None  # the virtual model asked for (None: a plain model)
    target: str = ""  # model@provider that answered
    reason: str = ""
    rule: str = ""  # a budget route that redirected the request, if one did
