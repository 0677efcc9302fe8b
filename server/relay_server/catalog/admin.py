"""Catalog changes as admin operations: add, price, alias, route, disable and
delete models; list models and providers.

Only platform operators read and change the catalog (it is global; tenants
see the models they may call at ``GET /v1/models``).  Each change is
validated here, written with its audit row in one transaction, and then
announced through ``CatalogSync`` so every worker serves the new catalog on
its next request.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol, cast

from relay_server.errors import ErrorKind, RelayError
from relay_server.pipeline.routing.health import HealthTracker
from relay_server.storage.postgres import catalog_admin as store
from relay_server.storage.postgres.catalog_admin import ModelRecord, RouteSpec
from relay_server.storage.postgres.pool import Database
from relay_server.storage.postgres.providers import PostgresProviderStore, ProviderRow
from relay_server.storage.redis.health import WindowStats
from relay_server.tenancy.calls import Call

__all__ = ["Announcer", "CatalogAdmin", "ModelDraft", "ModelRecord", "ProviderState", "RouteSpec", "parse_price"]

REGION = re.compile(r"^[a-z0-9-]{1,32}$")
_NAME = NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$")
KINDS = ("chat", "completion", "embedding")
MODEL_STATUSES = ("active", "deprecated", "disabled")
ROUTE_STATUSES = ("active", "disabled")
MAX_ALIASES = 32
MAX_ROUTES = 32
# What an update mask may name (the resource's own names); id and relay_name never change.
MUTABLE = frozenset(f.name for f in fields(ModelRecord)) - {"id", "relay_name"}


@dataclass(frozen=True, slots=True)
class ModelDraft:
    """What an operator sent: every field as given (empty / 0 where absent)."""

    relay_name: str
    values: Mapping[str, Any]  # field name -> value, in ModelRecord's types (None = empty)


class Announcer(Protocol):
    async def changed(self) -> None: ...


def _bad(param: str, message: str) -> RelayError:
    return RelayError(ErrorKind.BAD_REQUEST, message, param=param)


def parse_price(value: str, param: str, *, required: bool) -> Decimal | None:
    text = value.strip()
    if not text:
        if required:
            raise _bad(param, f"{param} is required (USD per 1M tokens, a decimal string).")
        return None
    try:
        price = Decimal(text)
    except InvalidOperation:
        raise _bad(param, f"{param} must be a decimal string, got {value!r}.") from None
    if not price.is_finite() or price < 0 or price > 1_000_000:
        raise _bad(param, f"{param} must be between 0 and 1000000.")
    return price


def _name(value: str, param: str) -> str:
    if not _NAME.match(value):
        raise _bad(param, f"{param} must be 1-128 characters of letters, digits and . _ : / @ + - (got {value!r}).")
    return value


def _check(record: ModelRecord, providers: set[str]) -> ModelRecord:
    """The whole record, validated as it will be stored."""
    if record.provider_id not in providers:
        raise _bad("model.provider_id", f"Unknown provider `{record.provider_id}`.")
    _name(record.provider_name, "model.provider_name")
    for price in ("input_cost_per_1m", "output_cost_per_1m"):
        if getattr(record, price) is None:
            raise _bad(f"model.{price}", f"model.{price} is required.")
    if record.kind not in KINDS:
        raise _bad("model.kind", f"kind must be one of {', '.join(KINDS)}.")
    if record.status not in MODEL_STATUSES:
        raise _bad("model.status", f"status must be one of {', '.join(MODEL_STATUSES)}.")
    if record.context_window <= 0:
        raise _bad("model.context_window", "context_window must be a positive number of tokens.")
    if record.max_output_tokens is not None and record.max_output_tokens <= 0:
        raise _bad("model.max_output_tokens", "max_output_tokens must be positive (0: no limit).")
    if (record.kind == "embedding") != (record.embedding_dimensions is not None):
        raise _bad("model.embedding_dimensions", "embedding_dimensions is required for, and only for, embedding models.")
    if len(record.aliases) > MAX_ALIASES or len(set(record.aliases)) != len(record.aliases):
        raise _bad("model.aliases", f"aliases must be distinct, at most {MAX_ALIASES}.")
    for alias in record.aliases:
        _name(alias, "model.aliases")
        if alias in (record.relay_name, record.id):
            raise _bad("model.aliases", f"`{alias}` is the model's own name, not an alias.")
    seen: set[str] = set()
    for route in record.routes:
        if route.provider_id not in providers:
            raise _bad("model.routes", f"Unknown provider `{route.provider_id}` in routes.")
        if route.provider_id == record.provider_id or route.provider_id in seen:
            raise _bad("model.routes", f"Provider `{route.provider_id}` appears twice (the model's provider is its first route).")
        seen.add(route.provider_id)
        _name(route.provider_name, "model.routes")
        if route.region is not None and not REGION.match(route.region):
            raise _bad("model.routes", f"A route's region must be lower-case letters, digits and - (got {route.region!r}).")
        if route.status not in ROUTE_STATUSES:
            raise _bad("model.routes", f"A route's status must be one of {', '.join(ROUTE_STATUSES)}.")
    if len(record.routes) > MAX_ROUTES:
        raise _bad("model.routes", f"At most {MAX_ROUTES} extra routes.")
    return record


def _merge(current: ModelRecord | None, draft: ModelDraft, mask: Iterable[str]) -> ModelRecord:
    """The record to store: a new model from the draft, or ``current`` with the masked fields
    (every field when the mask is empty: a full replacement) taken from the draft."""
    paths = [p.strip() for p in mask if p.strip()]
    for path in paths:
        if path not in MUTABLE:
            raise _bad("update_mask", f"`{path}` cannot be updated (updatable: {', '.join(sorted(MUTABLE))}).")
    values = dict(draft.values)
    if current is None or not paths:
        base = {"id": current.id if current is not None else (values.pop("id", None) or draft.relay_name)}
        values.pop("id", None)
        values.setdefault("provider_name", None)
        if not values.get("provider_name"):
            values["provider_name"] = current.provider_name if current is not None else draft.relay_name
        if not values.get("display_name"):
            values["display_name"] = current.display_name if current is not None else draft.relay_name
        for required in ("provider_id", "input_cost_per_1m", "output_cost_per_1m", "context_window"):
            if values.get(required) in (None, "", 0):
                raise _bad(f"model.{required}", f"model.{required} is required.")
        return ModelRecord(relay_name=draft.relay_name, **cast(dict[str, Any], {**base, **values}))
    return replace(current, **{p: values[p] for p in paths if p in values})


@dataclass(frozen=True, slots=True)
class ProviderState:
    row: ProviderRow
    circuit: str  # closed | open | half_open
    failures: int
    window: WindowStats


class CatalogAdmin:
    def __init__(self, db: Database, announcer: Announcer, health: HealthTracker) -> None:
        self._db = db
        self._announcer = announcer
        self._health = health

    async def list_models(self, call: Call) -> list[ModelRecord]:
        call.principal.require_platform("read the model catalog")  # tenants list theirs at GET /v1/models
        async with self._db.system_tx() as conn:
            return await store.list_models(conn)

    async def list_providers(self, call: Call) -> list[ProviderState]:
        """Every provider with its operator status, circuit and the last five minutes of attempts."""
        call.principal.require_platform("list providers")
        rows = sorted((await PostgresProviderStore(self._db).load_directory()).providers.values(), key=lambda p: (p.priority, p.id))
        circuits = await self._health.circuits([p.id for p in rows])
        out = []
        for row in rows:
            circuit, state = circuits[row.id]
            out.append(ProviderState(row, circuit, state.failures, await self._health.window(row.id)))
        return out

    async def provider_state(self, row: ProviderRow) -> ProviderState:
        """One provider as ``list_providers`` shows it."""
        circuit, state = (await self._health.circuits([row.id]))[row.id]
        return ProviderState(row, circuit, state.failures, await self._health.window(row.id))

    async def upsert(self, call: Call, draft: ModelDraft, mask: Iterable[str] = ()) -> tuple[ModelRecord, bool]:
        """Create or update; returns the stored model and whether it was created."""
        call.principal.require_platform("change the model catalog")
        relay_name = _name(draft.relay_name.strip(), "model.relay_name")
        draft = ModelDraft(relay_name, draft.values)
        async with self._db.system_tx() as conn:
            current = await store.find_model(conn, relay_name, lock=True)
            if current is not None and current.relay_name != relay_name:
                current = None  # only another model's id: the insert below reports the conflict
            record = _check(_merge(current, draft, mask), await store.provider_ids(conn))
            taken = await store.names_taken(conn, [*record.aliases, *(() if current else (record.relay_name, record.id))], record.id)
            if taken:
                name, holder = next(iter(taken.items()))
                raise RelayError(ErrorKind.CONFLICT, f"`{name}` is already {holder}.", param="model.aliases")
            if current == record:
                return record, False  # nothing changed: nothing to audit or announce
            await store.save_model(conn, record, exists=current is not None)
            await call.audit(
                conn, None, "catalog.model_updated" if current else "catalog.model_created",
                resource_type="model", resource_id=record.id, metadata={"changes": _changes(current, record)},
            )  # fmt: skip
        await self._announcer.changed()
        return record, current is None

    async def delete(self, call: Call, name: str) -> None:
        call.principal.require_platform("change the model catalog")
        if not name.strip():
            raise _bad("relay_name", "relay_name is required.")
        async with self._db.system_tx() as conn:
            if await call.replay_of(conn, "catalog.model_deleted", None) is not None:
                return  # a retry of a delete that succeeded (same request_id): succeed again
            current = await store.find_model(conn, name.strip(), lock=True)
            if current is None:
                raise RelayError(ErrorKind.MODEL_NOT_FOUND, f"The model `{name}` is not in the catalog.", param="relay_name")
            await store.delete_model(conn, current.id)
            await call.audit(
                conn, None, "catalog.model_deleted", resource_type="model", resource_id=current.id,
                metadata={"relay_name": current.relay_name, "provider_id": current.provider_id},
            )  # fmt: skip
        await self._announcer.changed()


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, RouteSpec):
        return {"provider_id": value.provider_id, "provider_name": value.provider_name,
                "priority": value.priority, "status": value.status, "region": value.region}  # fmt: skip
    return value


def _changes(before: ModelRecord | None, after: ModelRecord) -> dict[str, Any]:
    """Field -> [old, new] for what changed (old is null for a new model)."""
    out: dict[str, Any] = {}
    for f in fields(ModelRecord):
        old = getattr(before, f.name) if before is not None else None
        new = getattr(after, f.name)
        if old != new:
            out[f.name] = [_plain(old), _plain(new)]
    return out
