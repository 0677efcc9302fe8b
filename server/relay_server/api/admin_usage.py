"""relay.admin.v1.UsageService: usage, the request log, per-key usage and billing.

Who may read what:
- platform operators: any tenant (``tenant_id`` required);
- dashboard users: their tenant, with ``usage:read`` (``billing:read`` for periods);
- an API key of the tenant (management or inference): its own tenant's usage
  and billing — except keys minted for an end user (``end_user_id`` set),
  which see only their own key's usage and requests, never other end users'.

Money comes as integer micro-dollars and as an exact decimal string.
"""

from __future__ import annotations

import inspect
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from google.protobuf import timestamp_pb2
from google.type import date_pb2

from relay_proto.relay.admin.v1 import usage_pb2, usage_pb2_grpc
from relay_server.api.admin_principal import AdminAuthenticator
from relay_server.api.admin_support import decode_cursor, encode_cursor
from relay_server.api.error_mapping import abort, as_relay_error
from relay_server.api.openai_service import request_metadata
from relay_server.api.pagination import decode_token, encode_token, page_size
from relay_server.domain.pricing import money_micros
from relay_server.domain.request import new_request_id
from relay_server.domain.usage import UsageFilter
from relay_server.errors import ErrorKind, RelayError, clip
from relay_server.pipeline.steps.authenticate import Authenticator, bearer_token
from relay_server.pipeline.steps.spend import usd
from relay_server.tenancy.rbac import AdminPrincipal
from relay_server.tenancy.usage import UsageReports

_GROUPS = {
    usage_pb2.USAGE_GROUP_BY_UNSPECIFIED: "day",
    usage_pb2.USAGE_GROUP_BY_DAY: "day",
    usage_pb2.USAGE_GROUP_BY_MODEL: "model",
    usage_pb2.USAGE_GROUP_BY_API_KEY: "api_key",
    usage_pb2.USAGE_GROUP_BY_END_USER: "end_user",
}
_ENVIRONMENTS = ("live", "test")
_MAX_RANGE_DAYS = 366
_DEFAULT_RANGE_DAYS = 30
_MAX_GROUPS = 10_000
_KEY_READER = frozenset({"usage:read", "billing:read"})


def money(micros: int) -> usage_pb2.Money:
    return usage_pb2.Money(micros=int(micros), usd=usd(int(micros)))


def decimal_money(amount: Decimal | None) -> usage_pb2.Money:
    """A NUMERIC USD amount: micros rounded half-even, the decimal string exact."""
    value = Decimal(amount or 0)
    return usage_pb2.Money(micros=money_micros(value), usd=format(value.normalize(), "f") if value else "0")


def _date(value: date_pb2.Date, param: str) -> date | None:
    if not (value.year or value.month or value.day):
        return None
    try:
        return date(value.year, value.month, value.day)
    except ValueError:
        raise RelayError(ErrorKind.BAD_REQUEST, f"{param} is not a valid date.", param=param) from None


def _pb_date(value: date) -> date_pb2.Date:
    return date_pb2.Date(year=value.year, month=value.month, day=value.day)


def _ts(moment: datetime | None) -> timestamp_pb2.Timestamp | None:
    if moment is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(moment.astimezone(UTC))
    return ts


def _row(group: str, r: dict[str, Any]) -> usage_pb2.UsageRow:
    return usage_pb2.UsageRow(
        group=group,
        request_count=int(r["request_count"]),
        input_tokens=int(r["input_tokens"]),
        output_tokens=int(r["output_tokens"]),
        total_tokens=int(r["total_tokens"]),
        cache_read_tokens=int(r["cache_read_tokens"]),
        cache_write_tokens=int(r["cache_write_tokens"]),
        cache_hits=int(r["cache_hits"]),
        error_count=int(r["error_count"]),
        cost=money(int(r["cost_micros"])),
        relay_revenue=decimal_money(r["relay_revenue"]),
        provider_cost=decimal_money(r["provider_cost"]),
    )


def _empty_total() -> usage_pb2.UsageRow:
    return usage_pb2.UsageRow(group="total", cost=money(0), relay_revenue=money(0), provider_cost=money(0))


class UsageServicer(usage_pb2_grpc.UsageServiceServicer):
    def __init__(
        self,
        admin: AdminAuthenticator,
        keys: Authenticator,
        reports: UsageReports,
    ) -> None:
        self._admin = admin
        self._keys = keys
        self._reports = reports

    # --- who is asking --------------------------------------------------------------

    async def _reader(self, context: Any, requested_tenant: str, permission: str) -> tuple[AdminPrincipal, str, str | None]:
        """(principal, tenant, key id the caller is confined to, if any)."""
        metadata = request_metadata(context)
        confined: str | None = None
        if bearer_token(metadata).startswith("rly_"):
            key = await self._keys.authenticate(metadata)
            principal = AdminPrincipal(
                kind="api_key", actor_id=key.key_id, tenant_id=key.tenant_id, permissions=_KEY_READER,
                environment=key.environment,
            )  # fmt: skip
            if key.end_user_id:
                if permission != "usage:read":
                    raise RelayError(ErrorKind.PERMISSION_DENIED, "An end user's key can read only its own usage.")
                confined = key.key_id
        else:
            resolved = self._admin.resolve(metadata) if hasattr(self._admin, "resolve") else self._admin.authenticate(metadata)
            principal = await resolved if inspect.isawaitable(resolved) else resolved
        tenant = principal.tenant_scope(requested_tenant)
        principal.require(permission)
        return principal, tenant, confined

    @staticmethod
    def _environment(requested: str, principal: AdminPrincipal) -> str:
        value = requested.strip().lower()
        if not value:
            return principal.environment if principal.environment in _ENVIRONMENTS else "live"
        if value not in _ENVIRONMENTS:
            raise RelayError(ErrorKind.BAD_REQUEST, "environment must be live or test.", param="environment")
        return value

    @classmethod
    def _environment_or_both(cls, requested: str, principal: AdminPrincipal) -> str | None:
        """As ``_environment``, but an empty value means both environments (None)."""
        return cls._environment(requested, principal) if requested.strip() else None

    @staticmethod
    def _range(start: date | None, end: date | None) -> tuple[date, date]:
        end = end or datetime.now(UTC).date()
        start = start or end - timedelta(days=_DEFAULT_RANGE_DAYS - 1)
        if start > end:
            raise RelayError(ErrorKind.BAD_REQUEST, "start_date is after end_date.", param="start_date")
        if (end - start).days >= _MAX_RANGE_DAYS:
            raise RelayError(ErrorKind.BAD_REQUEST, f"A range spans at most {_MAX_RANGE_DAYS} days.", param="start_date")
        return start, end

    # --- RPCs -------------------------------------------------------------------------

    async def QueryUsage(self, request, context):  # noqa: N802 (gRPC naming)
        request_id = new_request_id()
        try:
            principal, tenant, confined = await self._reader(context, request.tenant_id, "usage:read")
            start, end = self._range(_date(request.start_date, "start_date"), _date(request.end_date, "end_date"))
            if confined and request.api_key_id and request.api_key_id != confined:
                raise RelayError(ErrorKind.PERMISSION_DENIED, "An end user's key can read only its own usage.")
            filters = UsageFilter(
                start=start,
                end=end,
                environment=self._environment(request.environment, principal),
                api_key_id=confined or request.api_key_id or None,
                model_id=request.model_id or None,
                end_user_id=request.end_user_id or None,
            )
            group = _GROUPS.get(request.group_by)
            if group is None:
                raise RelayError(ErrorKind.BAD_REQUEST, "Unknown group_by.", param="group_by")
            if not 0 <= request.max_groups <= _MAX_GROUPS:
                raise RelayError(ErrorKind.BAD_REQUEST, f"max_groups is between 0 and {_MAX_GROUPS}.", param="max_groups")
            rows = await self._reports.usage(tenant, filters, group, request.max_groups)
            totals = await self._reports.usage(tenant, filters, None)
        except Exception as exc:  # noqa: BLE001
            await abort(context, as_relay_error(exc), request_id)
        total = _row("total", totals[0]) if totals and totals[0]["buckets"] else _empty_total()
        count = int(rows[0]["group_count"]) if rows and "group_count" in rows[0] else len(rows)
        return usage_pb2.QueryUsageResponse(rows=[_row(r["grp"], r) for r in rows], total=total, group_count=count)

    async def GetApiKeyUsage(self, request, context):  # noqa: N802
        request_id = new_request_id()
        try:
            _, tenant, confined = await self._reader(context, request.tenant_id, "usage:read")
            if not request.key_id:
                raise RelayError(ErrorKind.BAD_REQUEST, "key_id is required.", param="key_id")
            if confined and request.key_id != confined:
                raise RelayError(ErrorKind.PERMISSION_DENIED, "An end user's key can read only its own usage.")
            key = await self._reports.key(tenant, request.key_id)
            if key is None:
                raise RelayError(ErrorKind.NOT_FOUND, f"API key `{clip(request.key_id)}` does not exist.", param="key_id")
            start, end = self._range(_date(request.start_date, "start_date"), _date(request.end_date, "end_date"))
            filters = UsageFilter(start=start, end=end, environment=key["environment"], api_key_id=key["id"])
            days = await self._reports.usage(tenant, filters, "day")
            totals = await self._reports.usage(tenant, filters, None)
            response = usage_pb2.GetApiKeyUsageResponse(
                days=[_row(r["grp"], r) for r in days],
                total=_row("total", totals[0]) if totals and totals[0]["buckets"] else _empty_total(),
            )
            if key["spend_cap_micros"] is not None and key["spend_cap_window"]:
                cap = int(key["spend_cap_micros"])
                spent = await self._reports.cap_spent(tenant, key["id"], key["spend_cap_window"])
                response.cap.CopyFrom(money(cap))
                response.cap_window = key["spend_cap_window"]
                response.cap_spent.CopyFrom(money(spent))
                response.cap_remaining.CopyFrom(money(max(0, cap - spent)))
        except Exception as exc:  # noqa: BLE001
            await abort(context, as_relay_error(exc), request_id)
        return response

    async def ListRequests(self, request, context):  # noqa: N802
        request_id = new_request_id()
        try:
            principal, tenant, confined = await self._reader(context, request.tenant_id, "usage:read")
            if confined and request.api_key_id and request.api_key_id != confined:
                raise RelayError(ErrorKind.PERMISSION_DENIED, "An end user's key can read only its own requests.")
            size = page_size(request.page_size)
            after = decode_cursor(request.page_token)
            filters = {
                "api_key_id": confined or request.api_key_id,
                "model_id": request.model_id,
                "status": request.status,
                "end_user_id": request.end_user_id,
                "environment": self._environment_or_both(request.environment, principal),
                "id": request.request_id,  # one request's detail
            }
            start = request.start_time.ToDatetime(UTC) if request.HasField("start_time") else None
            end = request.end_time.ToDatetime(UTC) if request.HasField("end_time") else None
            rows = await self._reports.requests(tenant, filters, start, end, after, size + 1)
        except Exception as exc:  # noqa: BLE001
            await abort(context, as_relay_error(exc), request_id)
        more = len(rows) > size
        rows = rows[:size]
        token = encode_cursor(rows[-1]["created_at"], rows[-1]["id"]) if more else ""
        return usage_pb2.ListRequestsResponse(requests=[_record(r) for r in rows], next_page_token=token)

    async def ListBillingPeriods(self, request, context):  # noqa: N802
        request_id = new_request_id()
        try:
            principal, tenant, _ = await self._reader(context, request.tenant_id, "billing:read")
            size = page_size(request.page_size)
            before = None
            if request.page_token:
                raw_start, _, last_environment = decode_token(request.page_token).partition("|")
                try:
                    before = (date.fromisoformat(raw_start), last_environment)
                except ValueError:
                    raise RelayError(ErrorKind.BAD_REQUEST, "The page_token is malformed.", param="page_token") from None
            environment = self._environment_or_both(request.environment, principal)
            periods = await self._reports.periods(tenant, environment, before, size + 1)
        except Exception as exc:  # noqa: BLE001
            await abort(context, as_relay_error(exc), request_id)
        more = len(periods) > size
        periods = periods[:size]
        token = encode_token(f"{periods[-1]['period_start'].isoformat()}|{periods[-1]['environment']}") if more else ""
        return usage_pb2.ListBillingPeriodsResponse(billing_periods=[_period(p) for p in periods], next_page_token=token)


def _record(r: dict[str, Any]) -> usage_pb2.RequestRecord:
    metadata = r.get("request_metadata") or {}
    record = usage_pb2.RequestRecord(
        id=r["id"],
        api_key_id=r["api_key_id"],
        model_id=r["model_id"] or "",
        provider_id=r["provider_id"] or "",
        request_type=r["request_type"],
        stream=r["stream"],
        input_tokens=r["input_tokens"] or 0,
        output_tokens=r["output_tokens"] or 0,
        total_cost=money(r["cost_micros"] or 0),
        status=r["status"],
        error_code=r["error_code"] or "",
        http_status=r["http_status"] or 0,
        latency_ms=r["latency_ms"] or 0,
        ttft_ms=r["ttft_ms"] or 0,
        cache_hit=r["cache_hit"],
        end_user_id=r["end_user_id"] or "",
        environment=r["environment"],
        requested_model=r["requested_model"] or "",
        cache_read_tokens=r["cache_read_tokens"] or 0,
        cache_write_tokens=r["cache_write_tokens"] or 0,
        input_cost=decimal_money(r["input_cost"]),
        output_cost=decimal_money(r["output_cost"]),
        relay_revenue=decimal_money(r["relay_revenue"]),
        markup_rate=str(r["markup_rate"]),
        error_message=r["error_message"] or "",
        attempts=r["attempts"],
        usage_source=str(metadata.get("usage_source") or "") if isinstance(metadata, dict) else "",
        door=r.get("door") or "",
        cache_kind=r.get("cache_kind") or "",
        guardrails=_guardrails(r.get("guardrails")),
    )
    created = _ts(r["created_at"])
    if created is not None:
        record.create_time.CopyFrom(created)
    return record


def _guardrails(entries: Any) -> list[usage_pb2.GuardrailDecision]:
    """The request log's ``guardrails`` entries (NULL: no decision); a malformed entry is skipped, not fatal."""
    if not isinstance(entries, list):
        return []
    return [
        usage_pb2.GuardrailDecision(
            guardrail=str(e.get("guardrail") or ""), stage=str(e.get("stage") or ""),
            action=str(e.get("action") or ""), count=int(e.get("count") or 0),
        )
        for e in entries
        if isinstance(e, dict)
    ]


def _period(p: dict[str, Any]) -> usage_pb2.BillingPeriod:
    period = usage_pb2.BillingPeriod(
        id=p["id"],
        period_start=_pb_date(p["period_start"]),
        period_end=_pb_date(p["period_end"]),
        status=p["status"],
        total_cost=money(p["cost_micros"] or 0),
        provider_cost=decimal_money(p["total_cost"]),
        environment=p["environment"],
        line_items=[
            usage_pb2.BillingLineItem(
                model_id=line["model_id"],
                request_count=int(line["request_count"]),
                input_tokens=int(line["input_tokens"]),
                output_tokens=int(line["output_tokens"]),
                total_cost=money(int(line["cost_micros"])),
                provider_cost=decimal_money(line["total_cost"]),
            )
            for line in p["line_items"]
        ],
    )
    finalized = _ts(p["finalized_at"])
    if finalized is not None:
        period.finalize_time.CopyFrom(finalized)
    return period


def register_usage_service(server: Any, app: Any) -> str:
    """Add UsageService to ``server``; returns its full name (for reflection and health)."""
    from relay_server.api.admin_registry import admin_authenticator  # noqa: PLC0415 - avoids an import cycle

    servicer = UsageServicer(admin_authenticator(app), app.authenticator, app.tenancy.usage)
    usage_pb2_grpc.add_UsageServiceServicer_to_server(servicer, server)
    return usage_pb2.DESCRIPTOR.services_by_name["UsageService"].full_name
