"""Domain rows → ``relay.admin.v1`` messages (and the enum vocabularies both ways)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from google.protobuf import struct_pb2

from relay_proto.relay.admin.v1 import api_keys_pb2, audit_pb2, tenants_pb2
from relay_server.api.admin_support import timestamp
from relay_server.domain.audit import AuditRow
from relay_server.domain.keys import ApiKeyRow
from relay_server.domain.tenants import FeatureState, MemberRow, TenantRow
from relay_server.errors import ErrorKind, RelayError
from relay_server.tenancy.key_rules import micros_to_usd
from relay_server.tenancy.lifecycle import STATUSES

TENANT_STATUS = {name: i + 1 for i, name in enumerate(STATUSES)}  # enum order matches STATUSES
ENVIRONMENT = {"live": api_keys_pb2.KEY_ENVIRONMENT_LIVE, "test": api_keys_pb2.KEY_ENVIRONMENT_TEST}
SCOPE = {"inference": api_keys_pb2.KEY_SCOPE_INFERENCE, "management": api_keys_pb2.KEY_SCOPE_MANAGEMENT}
KEY_STATUS = {
    "active": api_keys_pb2.KEY_STATUS_ACTIVE,
    "revoked": api_keys_pb2.KEY_STATUS_REVOKED,
    "expired": api_keys_pb2.KEY_STATUS_EXPIRED,
}
SPEND_WINDOW = {
    "daily": api_keys_pb2.SPEND_CAP_WINDOW_DAILY,
    "monthly": api_keys_pb2.SPEND_CAP_WINDOW_MONTHLY,
    "total": api_keys_pb2.SPEND_CAP_WINDOW_TOTAL,
}


def _reverse(mapping: Mapping[str, int], value: int, param: str) -> str | None:
    """Enum number → name; 0 (unspecified) → None; unknown numbers are a 400."""
    if value == 0:
        return None
    for name, number in mapping.items():
        if number == value:
            return name
    raise RelayError(ErrorKind.BAD_REQUEST, f"Unknown value {value} for {param}.", param=param)


def tenant_status_name(value: int, param: str = "status") -> str | None:
    return _reverse(TENANT_STATUS, value, param)


def environment_name(value: int) -> str | None:
    return _reverse(ENVIRONMENT, value, "api_key.environment")


def scope_name(value: int) -> str | None:
    return _reverse(SCOPE, value, "api_key.scope")


def key_status_name(value: int) -> str | None:
    return _reverse(KEY_STATUS, value, "status")


def spend_window_name(value: int) -> str | None:
    return _reverse(SPEND_WINDOW, value, "api_key.spend_cap.window")


def tenant_message(row: TenantRow) -> tenants_pb2.Tenant:
    return tenants_pb2.Tenant(
        id=row.id,
        slug=row.slug,
        name=row.name,
        plan=row.plan,
        status=TENANT_STATUS[row.status],  # type: ignore[arg-type]
        create_time=timestamp(row.created_at),
        update_time=timestamp(row.updated_at),
        delete_time=timestamp(row.deleted_at),
        trial_end_time=timestamp(row.trial_ends_at),
        metadata=row.metadata,
        status_change_time=timestamp(row.status_changed_at),
    )


def key_message(row: ApiKeyRow, now: datetime | None = None) -> api_keys_pb2.ApiKey:
    now = now or datetime.now(UTC)
    status = row.status
    if status == "active" and row.expires_at is not None and row.expires_at <= now:
        status = "expired"  # authentication already refuses it; the sweep updates the row later
    message = api_keys_pb2.ApiKey(
        id=row.id,
        tenant_id=row.tenant_id,
        name=row.name,
        key_prefix=row.key_prefix,
        key_hint=row.key_hint,
        environment=ENVIRONMENT[row.environment],
        scope=SCOPE[row.scope],
        status=KEY_STATUS[status],
        end_user_id=row.end_user_id or "",
        parent_key_id=row.parent_key_id or "",
        allowed_models=list(row.allowed_models),
        rate_limits=api_keys_pb2.RateLimits(**row.rate_limit_overrides),
        expire_time=timestamp(row.expires_at),
        last_used_time=timestamp(row.last_used_at),
        create_time=timestamp(row.created_at),
        revoke_time=timestamp(row.revoked_at),
        rotated_to_key_id=row.rotated_to_id or "",
        grace_expire_time=timestamp(row.grace_expires_at),
        created_by=row.created_by or row.created_by_key_id or "",
    )
    if row.spend_cap_micros is not None and row.spend_cap_window is not None:
        message.spend_cap.CopyFrom(
            api_keys_pb2.SpendCap(amount_usd=micros_to_usd(row.spend_cap_micros), window=SPEND_WINDOW[row.spend_cap_window])
        )
    return message


def member_message(row: MemberRow) -> tenants_pb2.Member:
    return tenants_pb2.Member(
        user_id=row.id,
        tenant_id=row.tenant_id,
        email=row.email,
        name=row.name or "",
        role=row.role,
        status=row.status,
        create_time=timestamp(row.created_at),
    )


def feature_message(state: FeatureState) -> tenants_pb2.TenantFeature:
    return tenants_pb2.TenantFeature(
        feature=state.feature,
        enabled=state.enabled,
        source=state.source,
        reason=state.reason or "",
        expire_time=timestamp(state.expires_at),
    )


def audit_message(row: AuditRow) -> audit_pb2.AuditEvent:
    metadata = struct_pb2.Struct()
    metadata.update(row.metadata)
    return audit_pb2.AuditEvent(
        id=row.id,
        tenant_id=row.tenant_id or "",
        actor_id=row.actor_id,
        actor_type=row.actor_type,
        action=row.action,
        resource_type=row.resource_type or "",
        resource_id=row.resource_id or "",
        metadata=metadata,
        ip_address=row.ip_address or "",
        create_time=timestamp(row.created_at),
        request_id=row.request_id or "",
    )
