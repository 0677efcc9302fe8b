"""A virtual model's targets as ordered route groups for the planner.

``groups`` expands the targets into options (one per provider route; a target pinned to a
provider keeps that route only), leaves out what this request cannot use — a model the
caller may not call, one that lacks what the request needs (tools, vision, json_schema),
whose context window is too small, or a route outside the tenant's regions — ranks them
with the virtual model's strategy, then appends the fallback chain (each fallback a model
or another virtual model, in its listed order).  Each group carries the reason the answer
headers and the request log give when it answers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from relay_server.domain.catalog import CatalogEntry
from relay_server.domain.request import RequestContext
from relay_server.domain.routing import Target, VirtualModel
from relay_server.errors import ErrorKind, RelayError, clip
from relay_server.pipeline.routing.catalog import Catalog
from relay_server.pipeline.routing.provider_directory import ProviderDirectory
from relay_server.pipeline.routing.residency import in_region, outside_regions
from relay_server.pipeline.routing.strategies import Option, Signals, Strategy, strategies
from relay_server.pipeline.routing.virtual_models import MAX_DEPTH, VirtualModels
from relay_server.storage.postgres.providers import RouteRow
from relay_server.storage.redis.route_latency import RouteEwma

_IMAGE_PARTS = frozenset({"image_url", "image", "input_image"})


@dataclass(frozen=True, slots=True)
class Group:
    """Routes of one model tried together (BYOK keys first, then pooled), and why."""

    entry: CatalogEntry
    routes: tuple[RouteRow, ...]
    reason: str


def request_needs(body: Mapping[str, Any]) -> frozenset[str]:
    """What a target's model must support to serve this request."""
    needs: set[str] = set()
    if body.get("tools") or body.get("functions"):
        needs.add("tools")
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        needs.add("json_schema")
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, list) and any(isinstance(p, dict) and p.get("type") in _IMAGE_PARTS for p in content):
                needs.add("vision")
                break
    return frozenset(needs)


@dataclass(slots=True)
class _Why:
    """Why options were left out (the error when none is left)."""

    region: bool = False
    needs: bool = False
    context: bool = False
    access: bool = False


class TargetPlanner:
    def __init__(self, catalog: Catalog, directory: ProviderDirectory, models: VirtualModels) -> None:
        self._catalog = catalog
        self._directory = directory
        self._models = models
        self._strategies: dict[str, Strategy] = strategies()

    def options(self, ctx: RequestContext, vm: VirtualModel, tokens: int) -> list[Option]:
        """The usable options of ``vm``, in the operator's order; raises when none is left."""
        why = _Why()
        out = self._expand(ctx, vm.targets, tokens, why)
        if out:
            return out
        assert ctx.principal is not None
        if why.region:
            raise outside_regions(vm.name, ctx.principal.allowed_regions)
        if why.needs or why.context:
            needs = ", ".join(sorted(request_needs(ctx.body))) or "the input's length"
            raise RelayError(
                ErrorKind.BAD_REQUEST,
                f"No target of `{clip(vm.name)}` supports what this request needs ({needs}).",
                param="model", code="model_not_supported",
            )  # fmt: skip
        if why.access:
            raise RelayError(ErrorKind.MODEL_NOT_FOUND, f"The model `{clip(vm.name)}` does not exist or you do not have access to it.", param="model")
        raise RelayError(ErrorKind.NO_PROVIDER_AVAILABLE, f"No provider is available to serve `{clip(vm.name)}` right now.")

    def _expand(self, ctx: RequestContext, targets: Sequence[Target], tokens: int, why: _Why) -> list[Option]:
        assert ctx.principal is not None
        regions = ctx.principal.allowed_regions
        needs = request_needs(ctx.body)
        out: list[Option] = []
        for target in targets:
            try:
                entry = self._catalog.resolve(target.model, ctx.principal, ctx.kind)
            except RelayError:
                why.access = True
                continue
            if not entry.supports(needs):
                why.needs = True
                continue
            if tokens > entry.context_window:
                why.context = True
                continue
            for route in self._directory.routes_for(entry.model_id):
                if target.provider_id is not None and route.provider_id != target.provider_id:
                    continue
                if not in_region(route, regions):
                    why.region = True
                    continue
                out.append(Option(target, entry, route))
        return out

    def latency_pairs(self, vm: VirtualModel, options: Sequence[Option]) -> list[tuple[str, str]]:
        return [o.pair for o in options] if vm.strategy == "lowest-latency" else []

    def ranked(
        self, ctx: RequestContext, vm: VirtualModel, options: Sequence[Option], latency: Mapping[tuple[str, str], RouteEwma]
    ) -> list[Group]:
        """The options as the strategy orders them: the first for its reason, the rest as failover."""
        ranked = self._strategies[vm.strategy].rank(vm, options, Signals(stream=ctx.stream, latency=latency))
        first = ranked.options[0]
        out = [Group(first.entry, (first.route,), ranked.reason)]
        out.extend(Group(o.entry, (o.route,), f"failover from {first.label} ({vm.strategy})") for o in ranked.options[1:])
        return out

    def fallbacks(self, ctx: RequestContext, vm: VirtualModel, tokens: int) -> list[Group]:
        """The fallback chain: each name a virtual model (its targets in order) or a catalog model."""
        assert ctx.principal is not None
        out: list[Group] = []
        seen = {vm.name}
        pending = list(vm.fallbacks)
        depth = 0
        while pending and depth < MAX_DEPTH:
            depth += 1
            name = pending.pop(0)
            if name in seen:
                continue
            seen.add(name)
            nested = self._models.lookup(name, ctx.principal.tenant_id)
            targets = nested.targets if nested is not None else (Target(name),)
            for option in self._expand(ctx, targets, tokens, _Why()):
                out.append(Group(option.entry, (option.route,), f"fallback {name} of {vm.name}"))
            if nested is not None:
                pending.extend(nested.fallbacks)
        return out
